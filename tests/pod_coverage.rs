//! Pod features the README claims, each checked end to end where a user would see it:
//! volumes (subPath, emptyDir sizeLimit on disk and in memory), probes (HTTPS, startup,
//! initialDelaySeconds, successThreshold), dnsPolicy with dnsConfig, and imagePullSecrets
//! against a registry that wants a login. Real server and agent (private containerd and
//! runc), real docker-registry, busybox containers and Wasm guests, kubectl.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Registry, KUBECTL_DEFAULT, REGISTRY_LOGIN};
use k8s_openapi::api::core::v1::Pod;

const WAIT: Duration = Duration::from_secs(120);

fn logs(c: &Cluster, pod: &str, container: &str) -> String {
    c.ok(KUBECTL_DEFAULT, &["logs", pod, "-c", container])
}

/// `kubectl get pod -o json`, typed.
fn get_pod(c: &Cluster, name: &str) -> Pod {
    let json = c.ok(KUBECTL_DEFAULT, &["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&json).expect("pod json")
}

/// Run a host tool that must succeed, within `limit`.
fn run(limit: Duration, program: &str, args: &[&str]) -> String {
    let out = common::output_within(Command::new(program).args(args), None, limit);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many times the pod's events said something containing `needle` (a repeated event
/// is one object with a count).
fn event_count(c: &Cluster, pod: &str, needle: &str) -> u64 {
    let out = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.count}|{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    out.lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, text)| text.contains(needle))
        .map(|(n, _)| n.parse::<u64>().unwrap_or(1).max(1))
        .sum()
}

fn wait_event_count(c: &Cluster, pod: &str, needle: &str, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while event_count(c, pod, needle) < at_least {
        assert!(
            Instant::now() < deadline,
            "pod {pod}: fewer than {at_least} events with {needle:?}\nserver log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// subPath mounts show only what they name (a configMap key as a file in a container, an
/// emptyDir subdirectory in Wasm), kube-apiserver's subPath validation refuses paths that
/// climb out, and emptyDir sizeLimit bounds a memory volume (its tmpfs size, capped by
/// the pod's memory limit) and evicts a Wasm pod that fills a disk volume past it.
/// (Links out of a volume and a container filling a disk emptyDir: tests/hostile_volumes.)
#[test]
fn subpaths_and_emptydir_size_limits() {
    let reg = Registry::start();
    let busybox = reg.push_busybox("tests/busybox:v1");
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("vol-cov-node", &[]);
    c.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a.conf: alpha\n  b.conf: beta\n",
    );
    // A configMap key as one file: the directory around it shows nothing else.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: cm-subpath
spec:
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap: {{name: app}}
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "cat /etc/app/a.conf; echo; ls /etc/app"]
    volumeMounts:
    - {{name: cfg, mountPath: /etc/app/a.conf, subPath: a.conf}}
"#
    ));
    // Wasm: init containers make two subdirectories through subPaths (made on demand, as
    // the kubelet does); one container sees only `a`, another the whole volume.
    let mount =
        |sub: &str, at: &str| format!("    - {{name: shared, mountPath: {at}, subPath: {sub}}}");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: wasm-subpath
spec:
  restartPolicy: Never
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: make-a
    image: {wasm}
    args: ["write", "/a/x", "one"]
    volumeMounts:
{ma}
  - name: make-b
    image: {wasm}
    args: ["write", "/b/y", "two"]
    volumeMounts:
{mb}
  containers:
  - name: only-a
    image: {wasm}
    args: ["ls", "/data"]
    volumeMounts:
{md}
  - name: whole
    image: {wasm}
    args: ["ls", "/all"]
    volumeMounts:
    - {{name: shared, mountPath: /all}}
"#,
        ma = mount("a", "/a"),
        mb = mount("b", "/b"),
        md = mount("a", "/data"),
    ));

    // subPaths that leave the volume are refused when the pod is created, with
    // kube-apiserver's words, in init containers as in containers.
    for (sub, why) in [
        ("../escape", "must not contain '..'"),
        ("a/../../escape", "must not contain '..'"),
        ("/etc", "must be a relative path"),
    ] {
        for (list, field) in [
            ("containers", "containers"),
            ("initContainers", "initContainers"),
        ] {
            let mut manifest = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: climber\nspec:\n  volumes:\n  - name: v\n    emptyDir: {{}}\n  {list}:\n  - name: c\n    image: {wasm}\n    volumeMounts:\n    - {{name: v, mountPath: /v, subPath: {sub:?}}}\n"
            );
            if list == "initContainers" {
                manifest.push_str(&format!(
                    "  containers:\n  - name: main\n    image: {wasm}\n"
                ));
            }
            let out = c.apply_stdin(KUBECTL_DEFAULT, &["apply", "-f", "-"], &manifest);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "subPath {sub:?} was accepted");
            assert!(
                err.contains(&format!(
                    "spec.{field}[0].volumeMounts[0].subPath: Invalid value: {sub:?}: {why}"
                )),
                "subPath {sub:?}: {err}"
            );
        }
    }

    // Memory emptyDirs: a tmpfs of the sizeLimit, or of the pod's memory limit when that
    // is smaller, as `df` in the container shows it.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: tmpfs-sizes
spec:
  restartPolicy: Never
  volumes:
  - name: small
    emptyDir: {{medium: Memory, sizeLimit: 3Mi}}
  - name: big
    emptyDir: {{medium: Memory, sizeLimit: 1Gi}}
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "df -k /small /big | awk 'NR > 1 {{print $6, $2}}'"]
    resources:
      limits: {{memory: 40Mi}}
    volumeMounts:
    - {{name: small, mountPath: /small}}
    - {{name: big, mountPath: /big}}
"#
    ));
    // A Wasm guest writing past a memory emptyDir's sizeLimit gets ENOSPC.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: wasm-tmpfs
spec:
  restartPolicy: Never
  volumes:
  - name: fast
    emptyDir: {{medium: Memory, sizeLimit: 2Mi}}
  containers:
  - name: main
    image: {wasm}
    args: ["fill", "/fast/f", "8"]
    volumeMounts:
    - {{name: fast, mountPath: /fast}}
"#
    ));
    // A Wasm guest filling a disk emptyDir past its sizeLimit, and holding it.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: wasm-filler
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: 1Mi}}
  containers:
  - name: main
    image: {wasm}
    args: ["fill", "/scratch/f", "4", "hold"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
"#
    ));

    c.wait_pod_field("cm-subpath", "{.status.phase}", "Succeeded", WAIT);
    assert_eq!(logs(&c, "cm-subpath", "main"), "alpha\na.conf\n");

    c.wait_pod_field("wasm-subpath", "{.status.phase}", "Succeeded", WAIT);
    assert_eq!(logs(&c, "wasm-subpath", "only-a"), "x\n");
    assert_eq!(logs(&c, "wasm-subpath", "whole"), "a\nb\n");

    c.wait_pod_field("tmpfs-sizes", "{.status.phase}", "Succeeded", WAIT);
    assert_eq!(
        logs(&c, "tmpfs-sizes", "main"),
        "/small 3072\n/big 40960\n",
        "tmpfs sizes in KiB"
    );

    c.wait_pod_field("wasm-tmpfs", "{.status.phase}", "Failed", WAIT);
    let out = logs(&c, "wasm-tmpfs", "main");
    assert!(
        out.starts_with("fill /fast/f: No space left on device") && out.ends_with(" after 2 MiB\n"),
        "{out:?}"
    );

    c.wait_pod_field("wasm-filler", "{.status.phase}", "Failed", WAIT);
    assert_eq!(c.pod_field("wasm-filler", "{.status.reason}"), "Evicted");
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                "wasm-filler",
                "-o",
                "jsonpath={.status.message}"
            ]
        ),
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
}

/// An HTTPS server in a pod's network namespace (openssl s_server with a self-signed
/// certificate for another name): the probe must speak TLS and, as the kubelet does,
/// not verify the certificate. Stopped when dropped.
struct TlsServer(#[allow(dead_code)] common::Supervised);

impl TlsServer {
    fn start(netns: &str, port: u16, dir: &Path) -> TlsServer {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        run(
            Duration::from_secs(60),
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=not-this-pod.invalid",
                "-keyout",
                &key.display().to_string(),
                "-out",
                &cert.display().to_string(),
            ],
        );
        let child = common::Supervised::spawn(
            Command::new("ip")
                .args([
                    "netns", "exec", netns, "openssl", "s_server", "-quiet", "-www",
                ])
                .args(["-accept", &port.to_string(), "-cert"])
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            common::STREAM_LIMIT,
        );
        TlsServer(child)
    }
}

/// A busybox pod serving /www on 8080 with the given probes on container `web`.
fn probed(name: &str, image: &str, probes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
{probes}
"#
    )
}

/// Seconds from the container's start to the pod's Ready condition.
fn seconds_to_ready(c: &Cluster, pod: &str) -> i64 {
    let p = get_pod(c, pod);
    let status = p.status.expect("status");
    let started = status.container_statuses.as_ref().and_then(|cs| {
        let running = cs.first()?.state.as_ref()?.running.as_ref()?;
        running.started_at.clone()
    });
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    let (Some(started), Some(ready)) =
        (started, ready.and_then(|r| r.last_transition_time.clone()))
    else {
        panic!("{pod}: no start or Ready time");
    };
    ready.0.as_second() - started.0.as_second()
}

/// HTTPS probes; a startup probe holding readiness and liveness back until it succeeds
/// and restarting the container when it fails past its threshold; initialDelaySeconds and
/// successThreshold delaying readiness. (HTTP, tcpSocket, readiness driving endpoints and
/// liveness restarts: tests/networking.rs.)
#[test]
fn https_startup_and_delayed_probes() {
    let reg = Registry::start();
    let busybox = reg.push_busybox("tests/busybox:v1");
    let c = Cluster::with_agent("probe-cov-node", &[]);
    let every_second = "      periodSeconds: 1";
    // HTTPS readiness on 8443, where nothing listens until the test starts a server.
    c.apply(&probed(
        "tls",
        &busybox,
        &format!("    readinessProbe:\n      httpGet: {{scheme: HTTPS, path: /, port: 8443}}\n{every_second}"),
    ));
    // Starts only when /www/ok exists; readiness and liveness would both fail at once.
    c.apply(&probed(
        "gated",
        &busybox,
        &format!(
            "    startupProbe:\n      httpGet: {{path: /ok, port: 8080}}\n{every_second}\n      failureThreshold: 1000\n\
             \x20   readinessProbe:\n      tcpSocket: {{port: 9998}}\n{every_second}\n\
             \x20   livenessProbe:\n      tcpSocket: {{port: 9999}}\n{every_second}\n      failureThreshold: 1"
        ),
    ));
    // Never starts: killed after four failed startup probes.
    c.apply(&probed(
        "never-starts",
        &busybox,
        &format!("    startupProbe:\n      tcpSocket: {{port: 9999}}\n{every_second}\n      failureThreshold: 4"),
    ));
    // Ready only after its initial delay; ready only after four successes two seconds
    // apart (the first check is at once: six seconds at the least).
    c.apply(&probed(
        "delayed",
        &busybox,
        &format!("    readinessProbe:\n      tcpSocket: {{port: 8080}}\n{every_second}\n      initialDelaySeconds: 8"),
    ));
    c.apply(&probed(
        "four-successes",
        &busybox,
        "    readinessProbe:\n      tcpSocket: {port: 8080}\n      periodSeconds: 2\n      successThreshold: 4",
    ));

    // HTTPS: unready while nothing answers, ready once the TLS server does.
    c.wait_pod_field("tls", "{.status.phase}", "Running", WAIT);
    wait_event_count(&c, "tls", "Readiness probe failed", 1);
    assert_eq!(
        c.pod_field("tls", "{.status.containerStatuses[0].ready}"),
        "false"
    );
    let uid = c.pod_field("tls", "{.metadata.uid}");
    let certs = tempfile::tempdir().expect("cert dir");
    let _server = TlsServer::start(&format!("{}-{uid}", c.net.netns_prefix), 8443, certs.path());
    c.wait_pod_field(
        "tls",
        r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        "True",
        WAIT,
    );

    // Startup: while it fails, neither readiness nor liveness runs (liveness would
    // restart the container within a second), and the container is neither started nor
    // ready.
    wait_event_count(&c, "gated", "Startup probe failed", 4);
    for (field, want) in [
        ("{.status.containerStatuses[0].started}", "false"),
        ("{.status.containerStatuses[0].ready}", "false"),
        ("{.status.containerStatuses[0].restartCount}", "0"),
    ] {
        assert_eq!(c.pod_field("gated", field), want, "gated: {field}");
    }
    for probe in ["Readiness probe failed", "Liveness probe failed"] {
        assert_eq!(
            event_count(&c, "gated", probe),
            0,
            "gated: {probe} before startup"
        );
    }
    // Once it succeeds, liveness runs and restarts the container.
    c.ok(
        KUBECTL_DEFAULT,
        &["exec", "gated", "--", "touch", "/www/ok"],
    );
    c.wait_pod_field(
        "gated",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        WAIT,
    );
    assert!(event_count(&c, "gated", "Liveness probe failed") >= 1);
    assert!(
        event_count(
            &c,
            "gated",
            "Container web failed liveness probe, will be restarted"
        ) >= 1
    );

    // A startup probe failing past its threshold restarts the container: after four
    // failures a second apart, so the first run lasted three seconds at the least.
    c.wait_pod_field(
        "never-starts",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        WAIT,
    );
    assert!(
        event_count(
            &c,
            "never-starts",
            "Container web failed startup probe, will be restarted"
        ) >= 1
    );
    let p = get_pod(&c, "never-starts");
    let last = p.status.and_then(|s| {
        s.container_statuses?
            .into_iter()
            .next()?
            .last_state?
            .terminated
    });
    let (Some(started), Some(finished)) = (
        last.as_ref().and_then(|t| t.started_at.clone()),
        last.as_ref().and_then(|t| t.finished_at.clone()),
    ) else {
        panic!("never-starts: no terminated last state: {last:?}");
    };
    let ran = finished.0.as_second() - started.0.as_second();
    assert!(ran >= 2, "never-starts was killed {ran}s after its start");

    // The delays are lower bounds (timestamps are whole seconds, hence one less).
    for (pod, at_least) in [("delayed", 7), ("four-successes", 5)] {
        c.wait_pod_field(
            pod,
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            "True",
            WAIT,
        );
        let took = seconds_to_ready(&c, pod);
        assert!(took >= at_least, "{pod} was ready {took}s after its start");
    }
}

/// The cluster DNS address (kube-system/kube-dns).
fn cluster_dns(c: &Cluster) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )
}

/// A pod with `pod_extra` under spec and one container `main` of `image`.
fn dns_pod(name: &str, namespace: &str, image: &str, container: &str, pod_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n{pod_extra}  containers:\n  - name: main\n    image: {image}\n{container}"
    )
}

/// Copy `image` from an open registry into the one behind a login, with skopeo.
fn copy_to_login(from: &str, to_reg: &Registry, name: &str) -> String {
    let to = format!("{}/{name}", to_reg.addr);
    let (user, password) = REGISTRY_LOGIN;
    run(
        Duration::from_secs(120),
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("{user}:{password}"),
            &format!("docker://{from}"),
            &format!("docker://{to}"),
        ],
    );
    to
}

/// dnsPolicy ClusterFirst, ClusterFirst with dnsConfig, None with dnsConfig and Default, as
/// the container reads its resolv.conf and as a Wasm guest's name lookups resolve; and
/// imagePullSecrets: a pod whose pull secret does not exist yet fails with ErrImagePull
/// and the registry's refusal, then runs once the secret is there (Wasm and container).
#[test]
fn dns_policies_and_image_pull_secrets() {
    let reg = Registry::start();
    let busybox = reg.push_busybox("tests/busybox:v1");
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let hello = reg.push(
        &common::build_guest(
            "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
            "http-hello",
            "wasm32-wasip2",
        ),
        "tests/http-hello:v1",
    );
    let locked = Registry::with_htpasswd();
    let locked_wasm = copy_to_login(&wasm, &locked, "tests/testbox:p1");
    let locked_busybox = copy_to_login(&busybox, &locked, "tests/busybox:v1");
    let c = Cluster::with_agent("dns-cov-node", &[]);
    let dns = cluster_dns(&c);
    let cat = "    command: [\"cat\", \"/etc/resolv.conf\"]\n";
    let dns_config =
        |policy: &str, config: &str| format!("  dnsPolicy: {policy}\n  dnsConfig:\n{config}");
    c.apply(&dns_pod("first", "default", &busybox, cat, ""));
    c.apply(&dns_pod(
        "first-merged",
        "default",
        &busybox,
        cat,
        &dns_config(
            "ClusterFirst",
            "    nameservers: [192.0.2.53]\n    searches: [corp.example, svc.cluster.local]\n    options: [{name: ndots, value: \"2\"}, {name: edns0}]\n",
        ),
    ));
    c.apply(&dns_pod(
        "none",
        "default",
        &busybox,
        cat,
        &dns_config(
            "None",
            "    nameservers: [192.0.2.53, 192.0.2.54]\n    searches: [a.example, b.example]\n    options: [{name: timeout, value: \"2\"}, {name: rotate}]\n",
        ),
    ));
    c.apply(&dns_pod(
        "default-policy",
        "default",
        &busybox,
        cat,
        "  dnsPolicy: Default\n",
    ));
    // Wasm: a Service `target` in namespace `other`, and a pod in `default` whose only
    // search domain is `other`'s, so the bare name `target` resolves there.
    c.ok(KUBECTL_DEFAULT, &["create", "namespace", "other"]);
    c.apply(&dns_pod(
        "target",
        "other",
        &hello,
        "    ports: [{containerPort: 8080}]\n",
        "",
    ));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: target\n  namespace: other\nspec:\n  selector: {app: target}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
    );
    c.apply(&dns_pod(
        "wasm-none",
        "default",
        &hello,
        "",
        &dns_config(
            "None",
            &format!("    nameservers: [{dns}]\n    searches: [other.svc.cluster.local]\n    options: [{{name: ndots, value: \"5\"}}]\n"),
        ),
    ));
    c.apply(&dns_pod("wasm-first", "default", &hello, "", ""));

    // Pull secrets: both pods name `login`, which does not exist yet.
    let with_secret = "  imagePullSecrets: [{name: login}]\n";
    c.apply(&dns_pod(
        "locked-wasm",
        "default",
        &locked_wasm,
        "    args: [\"echo\", \"unlocked\"]\n",
        with_secret,
    ));
    c.apply(&dns_pod(
        "locked-ctr",
        "default",
        &locked_busybox,
        "    command: [\"echo\", \"unlocked\"]\n",
        with_secret,
    ));

    let search = "search default.svc.cluster.local svc.cluster.local cluster.local";
    let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (pod, want) in [
        ("first", format!("{search}\nnameserver {dns}\noptions ndots:5\n")),
        // dnsConfig merged in as the kubelet merges it: the cluster search list stays
        // first, repeats are dropped, the pod's ndots wins.
        (
            "first-merged",
            format!("{search} corp.example\nnameserver {dns}\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"),
        ),
        (
            "none",
            "search a.example b.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions timeout:2 rotate\n"
                .to_string(),
        ),
        ("default-policy", node_resolv),
    ] {
        c.wait_pod_field(pod, "{.status.phase}", "Succeeded", WAIT);
        assert_eq!(logs(&c, pod, "main"), want, "{pod}'s resolv.conf");
    }

    // Wasm lookups (wasi:sockets, an exec instance in the pod): `target` resolves through
    // the None pod's own search list; a ClusterFirst pod reaches it by `target.other`.
    for pod in ["wasm-none", "wasm-first"] {
        c.wait_pod_field(pod, "{.status.phase}", "Running", WAIT);
    }
    c.wait_for_output(
        &[
            "get",
            "endpoints",
            "target",
            "-n",
            "other",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}",
        ],
        &c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                "target",
                "-n",
                "other",
                "-o",
                "jsonpath={.status.podIP}",
            ],
        ),
        WAIT,
    );
    for (pod, name) in [
        ("wasm-none", "target:80"),
        ("wasm-first", "target.other:80"),
    ] {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &["exec", pod, "--", "http-hello", "connect", name],
        );
        assert_eq!(out, "connected\n", "{pod} connecting to {name}");
    }

    // Without the secret: ErrImagePull with the registry's refusal.
    for pod in ["locked-wasm", "locked-ctr"] {
        c.wait_pod_field(
            pod,
            "{.status.containerStatuses[0].state.waiting.reason}",
            "ErrImagePull",
            WAIT,
        );
        let msg = c.pod_field(pod, "{.status.containerStatuses[0].state.waiting.message}");
        assert!(
            msg.contains(&format!("registry {} refused access", locked.addr))
                && msg.contains("401 Unauthorized"),
            "{pod}: {msg}"
        );
    }
    // With it (kubectl's docker-registry secret: a dockerconfigjson), the next pull
    // attempt of the same pods succeeds.
    let (user, password) = REGISTRY_LOGIN;
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "secret",
            "docker-registry",
            "login",
            &format!("--docker-server={}", locked.addr),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ],
    );
    for pod in ["locked-wasm", "locked-ctr"] {
        c.wait_pod_field(pod, "{.status.phase}", "Succeeded", WAIT);
        assert_eq!(logs(&c, pod, "main"), "unlocked\n", "{pod}");
    }
}
