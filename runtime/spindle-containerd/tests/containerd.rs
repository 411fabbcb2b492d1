//! Against a real private containerd and runc, with an image built from busybox-static
//! (scripts/busybox-image) and pulled from a real docker-registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use spindle_containerd::daemon::Daemon;
use spindle_containerd::io::Fifos;
use spindle_containerd::spec::{self, Bind, ContainerSpec, ProcessSpec};
use spindle_containerd::{Containerd, RunSpec};
use spindle_image::{ImageStore, PullPolicy, PullSecrets};

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "../../../tests/common/listen.rs"]
mod listen;
#[path = "../../../tests/common/registry_server.rs"]
mod registry_server;

fn registry(dir: &Path) -> (Registry, String) {
    let (child, addr) = registry_server::spawn_registry(dir, "");
    (Registry(child), addr)
}

fn build_busybox(reference: &str, work: &Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-image");
    let st = Command::new("bash")
        .arg(script)
        .arg(reference)
        .arg(work)
        .status()
        .expect("busybox-image");
    assert!(st.success(), "building the busybox image failed");
}

type Output = Arc<Mutex<Vec<u8>>>;

async fn run(
    ctr: &Containerd,
    name: &str,
    chain: &str,
    dir: &Path,
    id: &str,
    c: ContainerSpec,
) -> (u32, String, u64) {
    let fifos = Fifos::create(&dir.join(id), false, false).expect("fifos");
    let out: Output = Arc::default();
    let sink = out.clone();
    let pump = fifos
        .pump(Arc::new(move |_, d: Vec<u8>| {
            sink.lock().expect("lock").extend_from_slice(&d);
            Box::pin(std::future::ready(()))
        }))
        .expect("pump");
    let cgroups_path = c.cgroups_path.clone();
    ctr.run(RunSpec {
        id,
        image: name,
        chain_id: chain,
        spec: spec::build(&c).expect("spec"),
        fifos: &fifos,
        terminal: false,
    })
    .await
    .expect("run");
    let exited = ctr.wait(id, "").await.expect("wait");
    let ooms = spindle_containerd::oom_kills(&cgroups_path);
    pump.finish().await;
    ctr.remove(id).await.expect("remove");
    let text = String::from_utf8_lossy(&out.lock().expect("lock")).into_owned();
    (exited.status, text, ooms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_unpacks_and_runs_busybox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, addr) = registry(dir.path());
    let reference = format!("{addr}/test/busybox:v1");
    build_busybox(&reference, &dir.path().join("build"));

    let store = ImageStore::open_for(&dir.path().join("images"), true).expect("store");
    let img = store
        .ensure(&reference, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect("pull");
    let container = img.container().expect("a container image").clone();
    assert_eq!(container.layers.len(), 1);
    // A Wasm-only store refuses it with a message naming why.
    let wasm_only = ImageStore::open(&dir.path().join("wasm-images")).expect("store");
    let err = wasm_only
        .ensure(&reference, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect_err("not wasm");
    assert!(err.to_string().contains("a container image"), "{err}");

    let mut daemon = Daemon::start(&dir.path().join("containerd"))
        .await
        .expect("containerd");
    let ns = format!("spindle-test-{}", std::process::id());
    let ctr = Containerd::connect(daemon.socket(), &ns)
        .await
        .expect("connect");
    assert!(ctr.version().await.expect("version").starts_with("1."));
    let chain = ctr.import(&img.resolved, &container).await.expect("import");
    // A second import finds everything in place.
    assert_eq!(
        ctr.import(&img.resolved, &container).await.expect("again"),
        chain
    );

    let vol = dir.path().join("vol");
    std::fs::create_dir_all(&vol).expect("vol");
    std::fs::write(vol.join("in.txt"), "from the host\n").expect("file");
    let c = ContainerSpec {
        process: ProcessSpec {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo hello; hostname; cat /data/in.txt; id -u; exit 3".into(),
            ],
            env: vec!["PATH=/bin".into()],
            uid: 0,
            ..Default::default()
        },
        hostname: "box-1".into(),
        binds: vec![Bind {
            source: vol.clone(),
            destination: "/data".into(),
            read_only: true,
        }],
        cgroups_path: format!("/spindle-test/{ns}-a"),
        ..Default::default()
    };
    let id = format!("{ns}-a");
    let (status, out, _) = run(&ctr, &img.resolved, &chain, dir.path(), &id, c).await;
    assert_eq!(status, 3, "{out}");
    assert_eq!(out, "hello\nbox-1\nfrom the host\n0\n");

    // A memory bomb under a 32 MiB limit is OOM-killed.
    let c = ContainerSpec {
        process: ProcessSpec {
            args: vec![
                "sh".into(),
                "-c".into(),
                "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done".into(),
            ],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        memory_limit: Some(32 << 20),
        cgroups_path: format!("/spindle-test/{ns}-b"),
        ..Default::default()
    };
    let id = format!("{ns}-b");
    let (status, _, ooms) = run(&ctr, &img.resolved, &chain, dir.path(), &id, c).await;
    assert_eq!(status, 137);
    assert!(ooms > 0, "no OOM kill recorded");
    assert!(ctr.containers().await.expect("list").is_empty());
    daemon.stop().await;
}
