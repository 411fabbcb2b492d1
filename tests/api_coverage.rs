//! API and control-plane behaviour the README promises, checked on the wire: watch
//! bookmarks and resuming a watch from a resourceVersion, delete preconditions, `/healthz`
//! without credentials, `--tls-san`, the pinned agent certificate behind `pods/log`, the
//! Deployment Progressing condition with its progress deadline, and pod GC of pods whose
//! Node was deleted.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use serde_json::{json, Value};

use common::{Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);

/// One request as sent, and the status code and body (JSON when it parses) as answered.
async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_as(client, method, path, "application/json", body).await
}

async fn call_as(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        ))
        .expect("request");
    let resp = client.send(req).await.expect("send");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, v)
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {v}"))
}

/// The lines of a watch response, each parsed, with a deadline per line.
struct Watch {
    lines: futures::io::Lines<Box<dyn futures::AsyncBufRead + Unpin + Send>>,
}

impl Watch {
    async fn open(client: &kube::Client, path: &str) -> Watch {
        let req = http::Request::get(path).body(Vec::new()).expect("request");
        let body = client.request_stream(req).await.expect("watch");
        let boxed: Box<dyn futures::AsyncBufRead + Unpin + Send> = Box::new(body);
        Watch {
            lines: boxed.lines(),
        }
    }

    async fn next(&mut self, within: Duration) -> Value {
        self.next_expecting(within, "a watch event").await
    }

    async fn next_expecting(&mut self, within: Duration, what: &str) -> Value {
        let line = tokio::time::timeout(within, self.lines.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
            .expect("watch stream ended")
            .expect("watch read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Events up to and including the ADDED event of `last`, as "TYPE name".
    async fn until_added(&mut self, last: &str) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next(MINUTE).await;
            let ty = ev["type"].as_str().unwrap_or_default().to_string();
            let name = ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default();
            let done = ty == "ADDED" && name == last;
            seen.push((ty, ev["object"].clone()));
            if done {
                return seen;
            }
        }
    }
}

fn summary(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(ty, o)| format!("{ty} {}", o["metadata"]["name"].as_str().unwrap_or("")))
        .collect()
}

async fn create_cm(client: &kube::Client, ns: &str, name: &str) -> Value {
    let (code, v) = call(
        client,
        "POST",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "1"}})),
    )
    .await;
    assert_eq!(code, 201, "create {name}: {v}");
    v
}

/// A DELETE with these preconditions, which must be refused with 409 Conflict; the Status.
async fn refused_delete(client: &kube::Client, path: &str, preconditions: Value) -> Value {
    let body = json!({ "preconditions": preconditions });
    let (code, st) = call(client, "DELETE", path, Some(body)).await;
    assert_eq!((code, &st["reason"]), (409, &json!("Conflict")), "{st}");
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_resume_and_delete_preconditions() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let ns = "wire";
    let (code, v) = call(
        &client,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    // The root-CA publisher adds kube-root-ca.crt to every new namespace on its own time; let
    // it land first so the watches below see only this test's ConfigMaps.
    let published = Instant::now();
    while call(&client, "GET", &format!("{cms}/kube-root-ca.crt"), None)
        .await
        .0
        != 200
    {
        assert!(
            published.elapsed() < MINUTE,
            "kube-root-ca.crt never appeared in {ns}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- Bookmarks: a watch that allows them gets one, carrying only a resourceVersion.
    let a = create_cm(&client, ns, "a").await;
    let mut w = Watch::open(
        &client,
        &format!(
            "{cms}?watch=1&allowWatchBookmarks=true&resourceVersion={}",
            rv_of(&a)
        ),
    )
    .await;
    let b = create_cm(&client, ns, "b").await;
    let first = w.next(MINUTE).await;
    assert_eq!(first["type"], "ADDED", "{first}");
    assert_eq!(first["object"]["metadata"]["name"], "b", "{first}");
    // The API server bookmarks a quiet watch every 15 s (kube-apiserver: about a minute).
    let bm = w
        .next_expecting(
            MINUTE,
            "BOOKMARK on a quiet watch with allowWatchBookmarks=true",
        )
        .await;
    assert_eq!(bm["type"], "BOOKMARK", "only a bookmark can follow: {bm}");
    let obj = &bm["object"];
    assert_eq!(obj["kind"], "ConfigMap", "{bm}");
    assert_eq!(obj["apiVersion"], "v1", "{bm}");
    let keys: Vec<&String> = obj.as_object().expect("object").keys().collect();
    assert!(
        keys.iter()
            .all(|k| ["kind", "apiVersion", "metadata"].contains(&k.as_str())),
        "a bookmark is an empty object of the kind: {bm}"
    );
    let set: Vec<&String> = obj["metadata"]
        .as_object()
        .expect("metadata")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(set, ["resourceVersion"], "{bm}");
    let bm_rv = rv_of(obj);
    assert!(
        bm_rv >= rv_of(&b),
        "bookmark {bm_rv} is behind b's {}",
        rv_of(&b)
    );
    drop(w);

    // --- Resume: a watch from a resourceVersion delivers exactly what came after it.
    let (code, b2) = call_as(
        &client,
        "PATCH",
        &format!("{cms}/b"),
        "application/merge-patch+json",
        Some(json!({"data": {"k": "2"}})),
    )
    .await;
    assert_eq!(code, 200, "{b2}");
    let c_obj = create_cm(&client, ns, "c").await;
    let (code, v) = call(&client, "DELETE", &format!("{cms}/b"), None).await;
    assert_eq!(code, 200, "{v}");
    create_cm(&client, ns, "z").await;

    let mut from_bm = Watch::open(&client, &format!("{cms}?watch=1&resourceVersion={bm_rv}")).await;
    let got = from_bm.until_added("z").await;
    assert_eq!(
        summary(&got),
        ["MODIFIED b", "ADDED c", "DELETED b", "ADDED z"],
        "resumed from the bookmark's {bm_rv}"
    );
    let rvs: Vec<u64> = got.iter().map(|(_, o)| rv_of(o)).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]) && rvs[0] > bm_rv,
        "event resourceVersions {rvs:?} after {bm_rv}"
    );
    assert_eq!(
        got[0].1["data"]["k"], "2",
        "MODIFIED carries the new object"
    );

    let mut from_a = Watch::open(
        &client,
        &format!("{cms}?watch=1&resourceVersion={}", rv_of(&a)),
    )
    .await;
    let got = from_a.until_added("z").await;
    assert_eq!(
        summary(&got),
        ["ADDED b", "MODIFIED b", "ADDED c", "DELETED b", "ADDED z"],
        "resumed from a's resourceVersion"
    );
    let mut from_c = Watch::open(
        &client,
        &format!("{cms}?watch=1&resourceVersion={}", rv_of(&c_obj)),
    )
    .await;
    let got = from_c.until_added("z").await;
    assert_eq!(summary(&got), ["DELETED b", "ADDED z"], "resumed from c's");

    // --- Delete preconditions, answered in kube-apiserver's words (rest.BeforeDelete).
    let p = create_cm(&client, ns, "guarded").await;
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let rv = rv_of(&p).to_string();
    let path = format!("{cms}/guarded");
    let st = refused_delete(&client, &path, json!({"uid": "wrong"})).await;
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on ConfigMap \"guarded\": the UID in the precondition (wrong) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
    );
    assert_eq!(
        st["details"],
        json!({"name": "guarded", "kind": "ConfigMap"}),
        "{st}"
    );
    let st = refused_delete(&client, &path, json!({"uid": uid, "resourceVersion": "1"})).await;
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on ConfigMap \"guarded\": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record ({rv}). The object might have been modified"),
    );
    let (code, still) = call(&client, "GET", &path, None).await;
    assert_eq!(code, 200, "a failed precondition deletes nothing: {still}");
    let (code, st) = call(
        &client,
        "DELETE",
        &path,
        Some(json!({"preconditions": {"uid": uid, "resourceVersion": rv}})),
    )
    .await;
    assert_eq!((code, &st["status"]), (200, &json!("Success")), "{st}");
    let (code, _) = call(&client, "GET", &path, None).await;
    assert_eq!(code, 404, "the right preconditions delete");

    // A grouped kind is named Kind.group.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "guarded"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "g"}},
                 "template": {"metadata": {"labels": {"app": "g"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (code, v) = call(
        &client,
        "POST",
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        Some(dep),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let duid = v["metadata"]["uid"].as_str().expect("uid").to_string();
    let st = refused_delete(
        &client,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/guarded"),
        json!({"uid": "wrong"}),
    )
    .await;
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on Deployment.apps \"guarded\": the UID in the precondition (wrong) does not match the UID in record ({duid}). The object might have been deleted and then recreated"),
    );
    assert_eq!(
        st["details"],
        json!({"name": "guarded", "group": "apps", "kind": "Deployment"})
    );

    // Namespaces check their preconditions in their own registry, with other words.
    let (code, nsobj) = call(&client, "GET", &format!("/api/v1/namespaces/{ns}"), None).await;
    assert_eq!(code, 200);
    let nsuid = nsobj["metadata"]["uid"].as_str().expect("uid").to_string();
    let st = refused_delete(
        &client,
        &format!("/api/v1/namespaces/{ns}"),
        json!({"uid": "wrong"}),
    )
    .await;
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on namespaces \"{ns}\": Precondition failed: UID in precondition: wrong, UID in object meta: {nsuid}"),
    );
    assert_eq!(st["details"], json!({"name": ns, "kind": "namespaces"}));
}

// ---------------------------------------------------------------------------------------
// TLS: anonymous health, --tls-san, and the agent certificate the API server pins.

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A TLS endpoint standing in for a node agent: it answers any request with a fixed body
/// and records the request heads it received, with whichever certificate is current,
/// each followed by an `x-client-user:` line naming the client certificate's CN if the
/// cluster CA issued it.
struct StandIn {
    port: u16,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    heads: Arc<Mutex<Vec<String>>>,
}

fn server_config(cert_der: Vec<u8>, key_der: Vec<u8>, ca_pem: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = spindle_meta::tls::client_certs::ClientCerts::for_ca(ca_pem).expect("CA");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(Arc::new(clients))
        .with_single_cert(
            vec![cert_der.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .expect("server config");
    Arc::new(cfg)
}

impl StandIn {
    fn start(first: Arc<rustls::ServerConfig>, ca_pem: &str) -> StandIn {
        let clients =
            Arc::new(spindle_meta::tls::client_certs::ClientCerts::for_ca(ca_pem).expect("CA"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = Arc::new(Mutex::new(first));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (cfg, hs) = (config.clone(), heads.clone());
        // Lives as long as the test process; it only ever answers the API server.
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let cfg = cfg.lock().expect("config").clone();
                let (hs, clients) = (hs.clone(), clients.clone());
                std::thread::spawn(move || serve_one(tcp, cfg, hs, clients));
            }
        });
        StandIn {
            port,
            config,
            heads,
        }
    }

    fn present(&self, cfg: Arc<rustls::ServerConfig>) {
        *self.config.lock().expect("config") = cfg;
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

fn serve_one(
    tcp: std::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    heads: Arc<Mutex<Vec<String>>>,
    clients: Arc<spindle_meta::tls::client_certs::ClientCerts>,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            // A refused handshake ends here: nothing of the request was received.
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let peer = tls.conn.peer_certificates().unwrap_or_default().to_vec();
    let user = peer
        .first()
        .filter(|_| clients.verified(&peer))
        .and_then(|c| spindle_meta::tls::client_certs::subject(c))
        .map(|(name, _)| name)
        .unwrap_or_default();
    heads.lock().expect("heads").push(format!(
        "{}x-client-user: {user}\r\n",
        String::from_utf8_lossy(&head)
    ));
    let body = "hello from the stand-in agent\n";
    let _ = write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_names_anonymous_health_and_the_agent_certificate_of_the_ca() {
    let c = Cluster::start_with(&["--tls-san", "some.name", "--tls-san", "10.1.2.3"]);
    let url = c.server_url();
    let port = url.rsplit(':').next().expect("port").to_string();
    let tls_dir = c.data_dir().join("server/tls");
    let ca = tls_dir.join("server-ca.crt");
    let ca = ca.to_str().expect("path");

    // --- Only the health endpoints answer without credentials.
    for path in ["/healthz", "/livez", "/readyz"] {
        let (rc, out) = curl(&["--cacert", ca, &format!("{url}{path}")]);
        assert_eq!((rc, out.as_str()), (0, "ok\n200"), "{path}");
    }
    for path in [
        "/api/v1/namespaces",
        "/apis",
        "/api/v1/namespaces/default/pods/x/log",
    ] {
        let (rc, out) = curl(&["--cacert", ca, &format!("{url}{path}")]);
        assert_eq!(rc, 0, "{path}: {out}");
        assert!(out.ends_with("\n401"), "{path} without credentials: {out}");
        assert!(out.contains("\"reason\":\"Unauthorized\""), "{path}: {out}");
    }

    // --- --tls-san: the served certificate holds both names; other names fail.
    for name in ["some.name", "10.1.2.3"] {
        let (rc, out) = curl(&[
            "--cacert",
            ca,
            "--connect-to",
            &format!("{name}:{port}:127.0.0.1:{port}"),
            &format!("https://{name}:{port}/healthz"),
        ]);
        assert_eq!((rc, out.as_str()), (0, "ok\n200"), "as {name}");
    }
    let (rc, out) = curl(&[
        "--cacert",
        ca,
        "--connect-to",
        &format!("other.name:{port}:127.0.0.1:{port}"),
        &format!("https://other.name:{port}/healthz"),
    ]);
    assert_eq!(
        rc, 60,
        "curl's certificate-mismatch exit for a name not in the SANs: {out}"
    );
    let local = format!("https://127.0.0.1:{port}");
    let via = c.ok(
        K,
        &[
            "--server",
            &local,
            "--tls-server-name",
            "some.name",
            "--request-timeout=30s",
            "get",
            "ns",
            "default",
            "-o",
            "name",
        ],
    );
    assert_eq!(via.trim(), "namespace/default");
    let err = c.fails(
        K,
        &[
            "--server",
            &local,
            "--tls-server-name",
            "other.name",
            "--request-timeout=30s",
            "get",
            "ns",
            "default",
        ],
    );
    assert!(
        err.contains("x509: certificate is valid for") && err.contains("not other.name"),
        "{err}"
    );

    // --- pods/log goes only to an agent whose certificate the cluster CA issued for the
    // Node's InternalIP, as kube-apiserver verifies kubelets; the fingerprint annotation
    // older agents published is no longer trusted.
    let node = "stand-in";
    let ca_pem = std::fs::read_to_string(tls_dir.join("server-ca.crt")).expect("ca");
    let ca_key = std::fs::read_to_string(tls_dir.join("server-ca.key")).expect("ca key");
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).expect("key"))
            .expect("issuer");
    let issued = |names: &[&str]| {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("sign");
        server_config(cert.der().to_vec(), key.serialize_der(), &ca_pem)
    };
    let genuine_cfg = issued(&[node, "127.0.0.1"]);
    // Issued by the cluster CA, for another node's name and address.
    let other_cfg = issued(&["other-node", "10.9.9.9"]);
    // Right names, self-signed: what agents served before, pinned by the annotation.
    let self_signed =
        rcgen::generate_simple_self_signed(vec![node.to_string(), "127.0.0.1".to_string()])
            .expect("cert");
    let self_signed_der = self_signed.cert.der().to_vec();
    let self_signed_cfg = server_config(
        self_signed_der.clone(),
        self_signed.signing_key.serialize_der(),
        &ca_pem,
    );

    let agent = StandIn::start(self_signed_cfg.clone(), &ca_pem);
    let client = c.kube_client().await;
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&self_signed_der))
    };
    let (code, v) = call(
        &client,
        "POST",
        "/api/v1/nodes",
        Some(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
            "annotations": {"spindle.dev/agent-cert-sha256": fingerprint}}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = call_as(
        &client,
        "PATCH",
        &format!("/api/v1/nodes/{node}/status"),
        "application/merge-patch+json",
        Some(
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}}),
        ),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "logged"},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.local/x:1"}]}})),
    )
    .await;
    assert_eq!(code, 201, "{v}");

    for (what, cfg, why) in [
        (
            "self-signed, pinned by the old annotation",
            self_signed_cfg,
            "UnknownIssuer",
        ),
        ("issued for another node", other_cfg, "not valid for name"),
    ] {
        agent.present(cfg);
        let err = c.fails(K, &["logs", "logged", "--request-timeout=30s"]);
        assert!(
            err.contains("invalid peer certificate") && err.contains(why),
            "{what}: {err}"
        );
        assert!(
            agent.heads().is_empty(),
            "{what} received a request: {:?}",
            agent.heads()
        );
    }
    agent.present(genuine_cfg);
    let logs = c.ok(K, &["logs", "logged", "--request-timeout=30s"]);
    assert_eq!(logs, "hello from the stand-in agent\n");
    let heads = agent.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /containerLogs/default/logged/main?"),
        "{heads:?}"
    );
    // The API server's own client certificate from the cluster CA, and no bearer
    // secret: the join token's secret never leaves the server.
    assert!(
        heads[0].ends_with("\r\nx-client-user: kube-apiserver-kubelet-client\r\n"),
        "{heads:?}"
    );
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization:"),
        "{heads:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Controllers with hollow nodes: the Progressing condition and pod GC.

/// A Deployment that keeps its old pods until new ones are available (maxUnavailable 0).
/// `deadline`: progressDeadlineSeconds. Rollouts that must complete get the default
/// 600 s, so a stall on a loaded machine cannot time them out.
fn deployment(name: &str, replicas: u32, deadline: u32, extra_pod_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: {deadline}
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: registry.local/{name}:v1
{extra_pod_spec}"#
    )
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn progressing(c: &Cluster, name: &str) -> String {
    c.ok(
        K,
        &[
            "get",
            "deployment",
            name,
            "--request-timeout=30s",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Progressing")].status} {.status.conditions[?(@.type=="Progressing")].reason}"#,
        ],
    )
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_and_pod_gc_with_hollow_nodes() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "hollow", &[]);
    let mut doomed = c.hollow_nodes(1, "doomed", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#],
        "True True True",
        MINUTE,
    );
    let client = c.kube_client().await;

    // --- A rollout that completes: ReplicaSetUpdated on the way, NewReplicaSetAvailable
    // at the end. The watch replays every status write from before the Deployment existed.
    let (_, list) = call(
        &client,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments",
        None,
    )
    .await;
    let start_rv = rv_of(&list);
    c.apply(&deployment("steady", 2, 600, ""));
    c.ok(
        K,
        &["rollout", "status", "deployment/steady", "--timeout=90s"],
    );
    let mut w = Watch::open(
        &client,
        &format!("/apis/apps/v1/namespaces/default/deployments?watch=1&resourceVersion={start_rv}"),
    )
    .await;
    let mut reasons: Vec<String> = Vec::new();
    while reasons.last().map(String::as_str) != Some("True NewReplicaSetAvailable") {
        let ev = w.next(MINUTE).await;
        let conds = ev["object"]["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(p) = conds.iter().find(|c| c["type"] == "Progressing") {
            let r = format!(
                "{} {}",
                p["status"].as_str().unwrap_or(""),
                p["reason"].as_str().unwrap_or("")
            );
            if reasons.last() != Some(&r) {
                reasons.push(r);
            }
        }
    }
    assert!(
        reasons.contains(&"True ReplicaSetUpdated".to_string()),
        "Progressing reasons seen: {reasons:?}"
    );
    assert!(
        !reasons
            .iter()
            .any(|r| r.contains("ProgressDeadlineExceeded")),
        "{reasons:?}"
    );

    // --- A rollout that cannot progress: its new pods fit no node. After 5 s without
    // progress the condition says so and `kubectl rollout status` gives up.
    let stuck = deployment("stuck", 1, 600, "");
    c.apply(&stuck);
    c.ok(
        K,
        &["rollout", "status", "deployment/stuck", "--timeout=90s"],
    );
    assert_eq!(progressing(&c, "stuck"), "True NewReplicaSetAvailable");
    c.apply(&deployment(
        "stuck",
        1,
        5,
        "      nodeSelector:\n        nowhere: \"true\"\n",
    ));
    wait_for("ProgressDeadlineExceeded", MINUTE, || {
        (progressing(&c, "stuck") == "False ProgressDeadlineExceeded").then_some(())
    });
    let msg = c.ok(
        K,
        &[
            "get",
            "deployment",
            "stuck",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Progressing")].message}"#,
        ],
    );
    assert!(
        msg.starts_with("ReplicaSet \"stuck-") && msg.ends_with("\" has timed out progressing."),
        "{msg}"
    );
    let out = c.kubectl(
        K,
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
    );
    assert!(
        !out.status.success(),
        "rollout status of a timed-out rollout must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployment \"stuck\" exceeded its progress deadline"),
        "{err}"
    );
    // The old pod still serves: maxUnavailable 0 kept it.
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "deployment",
                "stuck",
                "-o",
                "jsonpath={.status.availableReplicas}"
            ]
        )
        .trim(),
        "1",
        "{}\n{}",
        c.ok(K, &["get", "deployment", "stuck", "-o", "yaml"]),
        c.ok(K, &["get", "rs,pods", "-o", "wide"])
    );

    // --- Pod GC: pods bound to a Node that is deleted are deleted too; others stay.
    for (pod, node) in [
        ("on-doomed-1", "doomed-0"),
        ("on-doomed-2", "doomed-0"),
        ("on-kept", "hollow-0"),
    ] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: registry.local/x:1\n"
        ));
        c.wait_pod_field(pod, "{.status.phase}", "Running", MINUTE);
    }
    // The node goes away for good: its process first (it would register it again).
    doomed.kill();
    c.ok(K, &["delete", "node", "doomed-0", "--request-timeout=30s"]);
    wait_for("pods of the deleted node to go", MINUTE, || {
        let left = c.ok(
            K,
            &[
                "get",
                "pods",
                "-o",
                "jsonpath={.items[*].metadata.name}",
                "--request-timeout=30s",
            ],
        );
        (!left.contains("on-doomed")).then_some(())
    });
    assert_eq!(c.pod_field("on-kept", "{.status.phase}"), "Running");
}
