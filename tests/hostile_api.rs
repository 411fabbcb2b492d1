//! Hostile input to the API server (issue 21, item 5; review SPN-03 API side, SPN-08,
//! SPN-09, SPN-10, SPN-12): each attack is made against a real `spindle server`, refused
//! the way kube-apiserver refuses it, and the server answers (and its controllers work)
//! afterwards. One cluster serves every check, with short connection timeouts and a small
//! connection cap so the connection attacks need not wait long.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, LineReader, KUBECTL_DEFAULT};

const MAX_CONNECTIONS: usize = 16;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Above the header timeout, so that the half-sent header below still meets that one.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const BODY_TIMEOUT: Duration = Duration::from_secs(3);
/// kube-apiserver's (and our) body and object limit.
const LIMIT: usize = 3 * 1024 * 1024;

#[test]
fn hostile_requests_are_refused_and_the_server_keeps_answering() {
    let c = Cluster::start_with(&[
        "--api-max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--api-tls-handshake-timeout",
        &format!("{}s", HANDSHAKE_TIMEOUT.as_secs()),
        "--api-header-read-timeout",
        &format!("{}s", HEADER_TIMEOUT.as_secs()),
        "--api-idle-timeout",
        &format!("{}s", IDLE_TIMEOUT.as_secs()),
        "--api-body-read-timeout",
        &format!("{}s", BODY_TIMEOUT.as_secs()),
    ]);
    let api = Api::new(&c);
    open_files_limit_is_raised(&c);
    yaml_bomb(&c, &api);
    oversized_bodies_and_objects(&c, &api);
    json_patch_amplification(&c, &api);
    watch_replay_is_bounded(&c, &api);
    huge_grace_periods(&c, &api);
    service_addresses_and_ports(&c);
    volume_sources(&c);
    stalled_connections(&c, &api);
    idle_connections(&c, &api);
    trickled_bodies(&c, &api);
    connection_flood(&c, &api);
    descriptor_exhaustion(&c, &api);
}

/// Raw HTTPS requests as the admin (its client certificate, with curl), for bodies and
/// content types kubectl will not send.
struct Api {
    url: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Api {
    fn new(c: &Cluster) -> Api {
        let tls = c.data_dir().join("server/tls");
        Api {
            url: c.server_url(),
            cert: tls.join("client-admin.crt"),
            key: tls.join("client-admin.key"),
            dir: c.dir.path().to_path_buf(),
        }
    }

    /// `method path` with `body` as `content_type`; returns the status and the body.
    fn call(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let file = self.dir.join("request-body");
        std::fs::write(&file, body).expect("body file");
        let out = Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "60",
                "-X",
                method,
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .arg("-H")
            .arg(format!("Content-Type: {content_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn addr(&self) -> SocketAddr {
        let hostport = self.url.trim_start_matches("https://");
        hostport.parse().expect("server address")
    }
}

fn server_pid(c: &Cluster) -> u32 {
    c.child.as_ref().expect("server running").id()
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc status")
}

/// CPU time (user + system) the process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat; after the comm field they are the 12th and 13th.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn still_answers(c: &Cluster) {
    for k in kubectls() {
        c.ok(k, &["get", "namespace", "default", "-o", "name"]);
    }
}

fn open_files_limit_is_raised(c: &Cluster) {
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", server_pid(c))).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f[3], f[4],
        "soft open-files limit raised to the hard one: {line}"
    );
}

/// SPN-09: ~100 KiB of YAML whose aliases expand to 4e8 values.
fn yaml_bomb(c: &Cluster, api: &Api) {
    let n = 20_000;
    let bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\nx: &a [{}]\ny: [{}]\n",
        vec!["x"; n].join(","),
        vec!["*a"; n].join(",")
    );
    let pid = server_pid(c);
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let start = Instant::now();
    let (code, body) = api.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        bomb.as_bytes(),
    );
    let took = start.elapsed();
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("document contains excessive aliasing"),
        "{body}"
    );
    assert!(took < Duration::from_secs(15), "refused after {took:?}");
    let grown_mib = proc_status_kib(pid, "VmRSS:").saturating_sub(rss_before) / 1024;
    eprintln!("YAML bomb refused in {took:?}, RSS grew by {grown_mib} MiB");
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");
    // The same with server-side apply, which takes YAML too.
    let (code, body) = api.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/bomb?fieldManager=t",
        "application/apply-patch+yaml",
        bomb.as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    still_answers(c);
}

fn big_configmap(name: &str, bytes: usize) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"a": "x".repeat(bytes)},
    })
    .to_string()
}

/// SPN-09: a body over 3 MiB, and an object that a patch would grow past 3 MiB.
fn oversized_bodies_and_objects(c: &Cluster, api: &Api) {
    let too_large = format!("Request entity too large: limit is {LIMIT}");
    let (code, body) = api.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        big_configmap("huge", LIMIT + 1024).as_bytes(),
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains(&too_large), "{body}");

    // 2 MiB is a valid request; copying the value doubles the object past the limit.
    let (code, body) = api.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        big_configmap("grows", 2 * 1024 * 1024).as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = api.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/grows",
        "application/json-patch+json",
        br#"[{"op":"copy","from":"/data/a","path":"/data/b"}]"#,
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains(&too_large), "{body}");
    // And the same with a merge patch that is itself under the limit.
    let merge = serde_json::json!({"data": {"b": "y".repeat(1536 * 1024)}}).to_string();
    let (code, body) = api.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/grows",
        "application/merge-patch+json",
        merge.as_bytes(),
    );
    assert_eq!(code, 413, "{body}");
    for k in kubectls() {
        let keys = c.ok(k, &["get", "cm", "grows", "-o", "jsonpath={.data.b}"]);
        assert!(keys.is_empty(), "the refused patch was stored");
    }
    c.ok(KUBECTL_DEFAULT, &["delete", "cm", "grows"]);
    still_answers(c);
}

/// SPN-09: JSON patch `copy` doubling (CVE-2019-1002100) and more than 10,000 operations.
fn json_patch_amplification(c: &Cluster, api: &Api) {
    for k in kubectls() {
        let _ = c.kubectl(k, &["delete", "cm", "doubling", "--ignore-not-found"]);
        c.ok(k, &["create", "cm", "doubling", "--from-literal=a=b"]);
        let mut ops = vec![
            serde_json::json!({"op": "add", "path": "/x", "value": vec!["0123456789abcdef"; 64]}),
        ];
        ops.extend(vec![
            serde_json::json!({"op": "copy", "from": "/x", "path": "/x/-"});
            40
        ]);
        let patch = serde_json::Value::Array(ops).to_string();
        let start = Instant::now();
        let err = c.fails(k, &["patch", "cm", "doubling", "--type=json", "-p", &patch]);
        assert!(
            err.contains("Unable to complete the copy, the accumulated size increase of copy is")
                && err.contains("exceeding the limit 3145728"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    let ops = vec![serde_json::json!({"op": "test", "path": "/data/a", "value": "b"}); 10_001];
    let (code, body) = api.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/doubling",
        "application/json-patch+json",
        serde_json::Value::Array(ops).to_string().as_bytes(),
    );
    assert_eq!(code, 413, "{body}");
    assert!(
        body.contains("The allowed maximum operations in a JSON patch is 10000, got 10001"),
        "{body}"
    );
    still_answers(c);
}

/// SPN-15: a watch resumed from far back would gather every change since in memory
/// before sending: beyond a byte bound it is told to relist (410), as a resume from before
/// kube-apiserver's watch cache window is.
fn watch_replay_is_bounded(c: &Cluster, api: &Api) {
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, body) = api.call(
        "POST",
        path,
        "application/json",
        big_configmap("churn", 1 << 20).as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    let rv_of = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("object");
        v["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string()
    };
    let first = rv_of(&body);
    let mut last = first.clone();
    for i in 0..20 {
        let merge = serde_json::json!({"data": {"a": format!("{i}").repeat(1 << 20)}}).to_string();
        let (code, body) = api.call(
            "PATCH",
            &format!("{path}/churn"),
            "application/merge-patch+json",
            merge.as_bytes(),
        );
        assert_eq!(code, 200, "{body}");
        if i == 17 {
            last = rv_of(&body);
        }
    }
    let watch = |rv: &str| {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "--raw",
                &format!("{path}?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
            ],
        )
    };
    let out = watch(&first);
    assert!(
        out.contains("\"code\":410") && out.contains("Expired"),
        "{}",
        &out[..out.len().min(400)]
    );
    // A recent resume replays as before.
    let out = watch(&last);
    assert_eq!(
        out.matches("\"type\":\"MODIFIED\"").count(),
        2,
        "{}",
        &out[..out.len().min(400)]
    );
    c.ok(KUBECTL_DEFAULT, &["delete", "cm", "churn"]);
    still_answers(c);
}

fn bound_pod(name: &str, node: &str, grace: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: graceful}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: {grace}
  tolerations:
  - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 9223372036854775807}}
  - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 9223372036854775807}}
  containers:
  - name: c
    image: registry.local/none:v1
"#
    )
}

fn deletion_timestamp(c: &Cluster, pod: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    )
}

/// SPN-10: a grace period past what a date can hold, through delete, eviction and the
/// node controller's taint eviction (an in-process client, so a panic there would be a
/// controller's). Controllers keep working afterwards.
fn huge_grace_periods(c: &Cluster, api: &Api) {
    let huge = "9000000000000";
    let node = "tainted-node";
    c.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n"
    ));
    for pod in ["deleted", "evicted", "tainted"] {
        c.apply(&bound_pod(pod, node, huge));
    }
    for k in kubectls() {
        c.ok(k, &["delete", "pod", "deleted", "--wait=false"]);
    }
    assert_eq!(deletion_timestamp(c, "deleted"), "9999-12-30T00:00:00Z");
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"evicted","namespace":"default"}}"#;
    let (code, body) = api.call(
        "POST",
        "/api/v1/namespaces/default/pods/evicted/eviction",
        "application/json",
        eviction.as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(deletion_timestamp(c, "evicted"), "9999-12-30T00:00:00Z");
    // A NoExecute taint the pod does not tolerate: the node controller deletes it.
    c.ok(
        KUBECTL_DEFAULT,
        &["taint", "node", node, "hostile=yes:NoExecute"],
    );
    c.wait_for_output(
        &[
            "get",
            "pod",
            "tainted",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        "9999-12-30T00:00:00Z",
        Duration::from_secs(60),
    );
    // The controllers still run: a new Deployment gets its ReplicaSet.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "deployment",
            "after-grace",
            "--image=registry.local/none:v1",
        ],
    );
    c.wait_for_output(
        &[
            "get",
            "rs",
            "-l",
            "app=after-grace",
            "-o",
            "jsonpath={.items[0].spec.replicas}",
        ],
        "1",
        Duration::from_secs(60),
    );
    still_answers(c);
}

/// `kubectl patch svc <name> --type=<ty> -p <patch>`, expected to fail; returns stderr.
fn svc_patch_fails(c: &Cluster, k: &str, name: &str, ty: &str, patch: &str) -> String {
    c.fails(
        k,
        &["patch", "svc", name, &format!("--type={ty}"), "-p", patch],
    )
}

fn cluster_ip(c: &Cluster, k: &str, name: &str) -> String {
    c.ok(k, &["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"])
}

/// SPN-12: a Service's address cannot be moved, duplicate ports are refused.
fn service_addresses_and_ports(c: &Cluster) {
    for (i, k) in kubectls().into_iter().enumerate() {
        let svc = format!("pinned-{i}");
        c.ok(k, &["create", "service", "clusterip", &svc, "--tcp=53:53"]);
        let ip = cluster_ip(c, k, &svc);
        let moved = r#"{"spec":{"clusterIP":"8.8.8.8","clusterIPs":["8.8.8.8"]}}"#;
        let err = svc_patch_fails(c, k, &svc, "merge", moved);
        let want =
            r#"spec.clusterIPs[0]: Invalid value: []string{"8.8.8.8"}: may not change once set"#;
        assert!(err.contains(want), "{err}");
        let err = svc_patch_fails(c, k, &svc, "merge", r#"{"spec":{"clusterIP":"8.8.8.8"}}"#);
        assert!(err.contains("spec.clusterIPs"), "{err}");
        assert_eq!(cluster_ip(c, k, &svc), ip);
        // An update that leaves the address out keeps it, as in Kubernetes.
        let unset = r#"[{"op":"remove","path":"/spec/clusterIP"},{"op":"remove","path":"/spec/clusterIPs"}]"#;
        c.ok(k, &["patch", "svc", &svc, "--type=json", "-p", unset]);
        assert_eq!(cluster_ip(c, k, &svc), ip);

        // ExternalName has no address; turning it into ClusterIP is checked as a create.
        let ext = format!("external-{i}");
        c.ok(
            k,
            &[
                "create",
                "service",
                "externalname",
                &ext,
                "--external-name=example.com",
            ],
        );
        let to_cluster_ip = r#"{"spec":{"type":"ClusterIP","externalName":null,"clusterIP":"8.8.8.8","ports":[{"port":53,"protocol":"UDP"}]}}"#;
        let err = svc_patch_fails(c, k, &ext, "merge", to_cluster_ip);
        assert!(err.contains("is not in the valid range"), "{err}");

        let dup = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: dup-{i}\nspec:\n  ports:\n  - {{name: a, port: 53, protocol: UDP}}\n  - {{name: b, port: 53, protocol: UDP}}\n"
        );
        let out = c.apply_stdin(k, &["apply", "-f", "-"], &dup);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let want = r#"spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"UDP", AppProtocol:(*string)(nil), Port:53, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}"#;
        assert!(err.contains(want), "{err}");
    }
    still_answers(c);
}

/// SPN-03, API side: one source per volume; hostPath type and `..` checked.
fn volume_sources(c: &Cluster) {
    let pod = |name: &str, volume: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - {{name: c, image: registry.local/none:v1}}\n  volumes:\n  - {volume}\n"
        )
    };
    for k in kubectls() {
        let cases = [
            (
                pod(
                    "two-sources",
                    "{name: x, hostPath: {path: /srv/data}, configMap: {name: c}}",
                ),
                "spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type",
            ),
            (
                pod(
                    "bad-type",
                    "{name: x, hostPath: {path: /srv, type: Anything}}",
                ),
                r#"spec.volumes[0].hostPath.type: Unsupported value: "Anything": supported values: "", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket""#,
            ),
            (
                pod("backsteps", "{name: x, hostPath: {path: /srv/../etc}}"),
                r#"spec.volumes[0].hostPath.path: Invalid value: "/srv/../etc": must not contain '..'"#,
            ),
        ];
        for (manifest, want) in cases {
            let out = c.apply_stdin(k, &["apply", "-f", "-"], &manifest);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(want), "{want}\n{err}");
        }
        for name in ["two-sources", "bad-type", "backsteps"] {
            let out = c.ok(k, &["get", "pod", name, "--ignore-not-found", "-o", "name"]);
            assert!(out.trim().is_empty(), "{name} was stored");
        }
    }
    still_answers(c);
}

/// Waits until the server closes `s` (EOF or reset); returns how long that took.
fn closed_within(mut s: TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(bound)).ok()?;
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// SPN-08: connections that never finish the handshake, and one that finishes it and
/// then sends half a request header, are closed by the server; kubectl works meanwhile.
fn stalled_connections(c: &Cluster, api: &Api) {
    let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS / 2)
        .map(|_| TcpStream::connect(api.addr()).expect("connect"))
        .collect();
    let mut partial = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "http/1.1", "-connect"])
        .arg(api.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = partial.stdin.take().expect("stdin");
    stdin
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("partial header");
    let start = Instant::now();
    still_answers(c);
    let bound = HANDSHAKE_TIMEOUT * 3;
    for s in silent {
        let took = closed_within(s, bound).expect("a silent connection was never closed");
        assert!(took <= bound);
    }
    // s_client exits when the server closes the connection (its stdin stays open).
    loop {
        if partial.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            start.elapsed() < HEADER_TIMEOUT + HANDSHAKE_TIMEOUT * 3,
            "a half-sent header kept its connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    still_answers(c);
}

/// `openssl s_client` connected to the API port with ALPN `proto`, its stdin kept open.
fn s_client(api: &Api, proto: &str) -> std::process::Child {
    Command::new("openssl")
        // -nocommands: stdin goes to the server as it is, even a line starting with Q.
        .args(["s_client", "-nocommands", "-alpn", proto, "-cert"])
        .arg(&api.cert)
        .arg("-key")
        .arg(&api.key)
        .arg("-connect")
        .arg(api.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client")
}

/// Waits (bounded) for `child` to exit: s_client does once the server closes.
fn exits_within(child: &mut std::process::Child, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < bound {
        if child.try_wait().expect("wait").is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn stdout_of(child: &mut std::process::Child) -> String {
    // Bytes: HTTP/2 frames from the server are not text.
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Review MUST-FIX: anonymous HTTP/2 connections that finish TLS and then send nothing,
/// or only the connection preface, are closed once idle, while a watch opened before
/// them (a request in flight) keeps streaming past the idle timeout.
fn idle_connections(c: &Cluster, api: &Api) {
    c.ok(KUBECTL_DEFAULT, &["create", "cm", "idle-before"]);
    let watch = LineReader::spawn(c.kubectl_cmd(
        KUBECTL_DEFAULT,
        &["get", "cm", "--watch", "-o", "name", "--request-timeout=0"],
    ));
    watch.wait_for("configmap/idle-before", Duration::from_secs(30));
    let start = Instant::now();
    let mut idle: Vec<_> = (0..6).map(|_| s_client(api, "h2")).collect();
    // The client preface and an empty SETTINGS frame, as every HTTP/2 client sends first.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    for child in idle.iter_mut().step_by(2) {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(preface).expect("preface");
        stdin.flush().expect("flush");
    }
    // Idle, then (HTTP/2 graceful shutdown waiting on a peer that never answers) a grace
    // of at most 5 s before the connection is dropped.
    let bound = IDLE_TIMEOUT + Duration::from_secs(5) + Duration::from_secs(10);
    for child in &mut idle {
        exits_within(child, bound.saturating_sub(start.elapsed()))
            .expect("an idle HTTP/2 connection was never closed");
        let took = start.elapsed();
        assert!(
            took >= IDLE_TIMEOUT,
            "closed after {took:?}, before it was idle"
        );
        let out = stdout_of(child);
        assert!(out.contains("ALPN protocol: h2"), "{out}");
    }
    eprintln!("idle HTTP/2 connections closed after {:?}", start.elapsed());
    assert!(start.elapsed() > IDLE_TIMEOUT);
    // The watch outlived the idle timeout on its connection and still streams.
    c.ok(KUBECTL_DEFAULT, &["create", "cm", "idle-after"]);
    watch.wait_for("configmap/idle-after", Duration::from_secs(30));
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "cm", "idle-before", "idle-after"],
    );
    still_answers(c);
}

/// Review MUST-FIX: a request body trickled a byte at a time is answered with
/// kube-apiserver's timeout Status once the body read timeout passes, and the connection
/// is closed; over HTTP/1.1 (s_client) and HTTP/2 (curl with a rate limit).
fn trickled_bodies(c: &Cluster, api: &Api) {
    let start = Instant::now();
    let file = api.dir.join("trickled-body");
    std::fs::write(&file, big_configmap("trickled", 1000)).expect("body file");
    let h2 = Command::new("curl")
        .args(["-sSk", "--http2", "--limit-rate", "20", "--max-time", "60"])
        .arg("--cert")
        .arg(&api.cert)
        .arg("--key")
        .arg(&api.key)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/api/v1/namespaces/default/configmaps", api.url))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut h1 = s_client(api, "http/1.1");
    let mut stdin = h1.stdin.take().expect("stdin");
    let head = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    stdin.write_all(head.as_bytes()).expect("headers");
    let bound = BODY_TIMEOUT + Duration::from_secs(15);
    // One byte every 200 ms, until the server closes the connection.
    let closed = loop {
        if h1.try_wait().expect("wait").is_some() {
            break true;
        }
        if start.elapsed() > bound {
            break false;
        }
        let _ = stdin.write_all(b" ").and_then(|()| stdin.flush());
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = start.elapsed();
    let _ = h1.kill();
    let out = stdout_of(&mut h1);
    assert!(closed, "a trickled body kept its connection; got {out}");
    assert!(took >= BODY_TIMEOUT, "closed after {took:?}: {out}");
    assert!(out.contains("HTTP/1.1 504"), "{out}");
    assert!(
        out.contains(r#""reason":"Timeout""#)
            && out.contains("request did not complete within requested timeout"),
        "{out}"
    );
    // The server answers before the body is in, then resets the stream (RST_STREAM
    // NO_ERROR, as RFC 9113 8.1 allows); curl 7 reports that reset as an error (92)
    // instead of the response. Either way the request ended long before its upload
    // (50 s at 20 B/s) would have.
    let out = h2.wait_with_output().expect("curl");
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(r#""reason":"Timeout""#) || out.status.code() == Some(92),
        "{text}\n{verbose}"
    );
    assert!(took >= BODY_TIMEOUT && took < bound, "curl took {took:?}");
    eprintln!("trickled bodies answered after {took:?}");
    still_answers(c);
}

/// SPN-08: more connections than the cap are closed at once, the server does not spin,
/// and serves again once the stalled ones time out.
fn connection_flood(c: &Cluster, api: &Api) {
    let pid = server_pid(c);
    let ticks_before = cpu_ticks(pid);
    let start = Instant::now();
    let conns: Vec<TcpStream> = (0..MAX_CONNECTIONS * 4)
        .map(|_| TcpStream::connect(api.addr()).expect("connect"))
        .collect();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|s| std::thread::spawn(move || closed_within(s, HANDSHAKE_TIMEOUT * 3)))
        .collect();
    let times: Vec<Duration> = handles
        .into_iter()
        .map(|h| h.join().expect("join").expect("closed"))
        .collect();
    let at_once = times.iter().filter(|t| **t < HANDSHAKE_TIMEOUT / 2).count();
    assert!(
        at_once >= MAX_CONNECTIONS * 3 - 2,
        "connections over the cap were held: {times:?}"
    );
    let wall = start.elapsed();
    let cpu = Duration::from_millis((cpu_ticks(pid) - ticks_before) * 10);
    eprintln!("connection flood: {cpu:?} of CPU in {wall:?}, closed after {times:?}");
    assert!(cpu < wall / 5, "the server used {cpu:?} of CPU in {wall:?}");
    still_answers(c);
}

/// SPN-08: with its descriptors used up the server backs off instead of spinning on
/// EMFILE, and recovers when they are free again.
fn descriptor_exhaustion(c: &Cluster, api: &Api) {
    let pid = server_pid(c);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    let limit = (open + 4).to_string();
    let prlimit = |n: &str| {
        let st = Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={n}:"))
            .status()
            .expect("prlimit");
        assert!(st.success());
    };
    let original = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .expect("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .expect("soft limit");
    prlimit(&limit);
    let ticks_before = cpu_ticks(pid);
    let start = Instant::now();
    let conns: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(api.addr()).expect("connect"))
        .collect();
    // Long enough for a spinning accept loop to show, shorter than the handshake timeout.
    let until = start + HANDSHAKE_TIMEOUT / 2;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = start.elapsed();
    let cpu = Duration::from_millis((cpu_ticks(pid) - ticks_before) * 10);
    prlimit(&original);
    drop(conns);
    eprintln!("out of descriptors: {cpu:?} of CPU in {wall:?}");
    assert!(
        cpu < wall / 5,
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );
    still_answers(c);
}
