//! A real OCI registry (Debian's docker-registry, distribution 2.8) for the tests: one way
//! to find it and start it, shared by tests/common and the crate tests through `#[path]`
//! includes (next to `listen.rs`). A missing registry fails the test: it never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Overrides where the registry binary is looked for (tests of this lookup hide it so).
pub const REGISTRY_BIN_ENV: &str = "SPINDLE_TEST_REGISTRY_BIN";

/// The docker-registry binary: `$SPINDLE_TEST_REGISTRY_BIN`, else `docker-registry` on
/// PATH, else Debian's /usr/bin/docker-registry. Panics when there is none.
pub fn registry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(REGISTRY_BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{REGISTRY_BIN_ENV}={} is not a file: the registry tests need docker-registry \
             (apt install docker-registry; scripts/test installs it)",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("docker-registry"))
        .chain([PathBuf::from("/usr/bin/docker-registry")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "docker-registry is not installed (not on PATH, not /usr/bin/docker-registry): \
                 the registry tests need it (apt install docker-registry; scripts/test installs it)"
            )
        })
}

/// The one account of a registry whose config has [`htpasswd_auth`]: user and password.
pub const LOGIN: (&str, &str) = ("tester", "s3cret");

/// Writes an htpasswd file for [`LOGIN`] (bcrypt, cost 4) into `dir` and returns the
/// config section that makes the registry ask for it (`extra` of [`spawn_registry`]).
pub fn htpasswd_auth(dir: &Path) -> String {
    let file = dir.join("htpasswd");
    let line = "tester:$2b$04$W7rHDsxVX4S4BzHKMQ8Riex0iQsr0aI5OO.ObRF4J2fKh5DQ1vFc.\n";
    std::fs::write(&file, line).expect("htpasswd");
    format!(
        "auth:\n  htpasswd:\n    realm: spindle-test\n    path: {}\n",
        file.display()
    )
}

/// A registry serving from `dir/data`, logging to `dir/registry.log`, with `extra` YAML
/// (e.g. an `auth:` section) appended to its config. It listens on a port it picks
/// itself; returns the child and `127.0.0.1:PORT` once `/v2/` answers there.
pub fn spawn_registry(dir: &Path, extra: &str) -> (Child, String) {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("registry config");
    let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
    let bin = registry_bin();
    let mut child = Command::new(&bin)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("registry log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let limit = Duration::from_secs(30);
    let port = super::listen::wait_listening(&mut child, "docker-registry", limit);
    let addr = format!("127.0.0.1:{port}");
    // Listening is not yet serving: wait for its API root (401 when it wants a login).
    let deadline = Instant::now() + limit;
    loop {
        match super::listen::http_status(addr.parse().expect("addr"), "/v2/") {
            Some(200 | 401) => return (child, addr),
            other => {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry on {addr} never answered /v2/ (last: {other:?}):\n{}",
                        std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
