//! ServiceAccounts and their tokens end to end: the `default` account and the
//! `kube-root-ca.crt` ConfigMap in every namespace, `kubectl create token` (both kubectl
//! versions) giving JWTs that authenticate, die with their bound pod and are refused when
//! expired or forged (401 in a Status), TokenReview, OIDC discovery, the ServiceAccount
//! admission plugin, and pods (a container and a Wasm guest) reading their projected
//! token, CA and namespace and calling the API server through the `kubernetes` Service.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{kubectls, output_within, Cluster, Registry, KUBECTL_DEFAULT, KUBECTL_LIMIT};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The claims of a JWT (not verified: the server does that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A kubeconfig holding only the server, its CA and `token`: kubectl authenticates with
/// the token alone (the admin kubeconfig's client certificate would authenticate too).
fn token_kubeconfig(c: &Cluster, token: &str) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem(c));
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
         users:\n- name: u\n  user:\n    token: {token}\n",
        c.server_url()
    );
    c.write_file(&format!("token-{}.kubeconfig", rand_suffix()), &cfg)
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn ca_pem(c: &Cluster) -> String {
    std::fs::read_to_string(c.data_dir().join("server/tls/server-ca.crt")).expect("CA")
}

/// `kubectl get pods` as the holder of `token`: its output, or its error.
fn as_token(c: &Cluster, kubectl: &str, token: &str, args: &[&str]) -> Result<String, String> {
    let cfg = token_kubeconfig(c, token);
    let out = output_within(
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&cfg)
            .arg("--request-timeout=30s")
            .args(args),
        None,
        KUBECTL_LIMIT,
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What the API server answers a bearer token on `path`: status code and body (curl).
fn raw_with_token(c: &Cluster, token: &str, path: &str) -> (String, String) {
    let ca = c.write_file("ca.pem", &ca_pem(c));
    let out = output_within(
        Command::new("curl")
            .args(["-s", "--max-time", "30", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{}{path}", c.server_url())),
        None,
        KUBECTL_LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// The token was taken: the request was served, or refused by authorization (403, once
/// RBAC decides what the account may do), but never refused as unauthenticated.
fn authenticated(result: Result<String, String>, what: &str) {
    if let Err(e) = result {
        assert!(
            e.contains("Forbidden") && !e.contains("Unauthorized"),
            "{what}: {e}"
        );
    }
}

fn unauthorized(result: Result<String, String>) {
    let err = result.expect_err("the token should be refused");
    assert!(
        err.contains("Unauthorized") && err.contains("You must be logged in"),
        "{err}"
    );
}

/// The `default` account's name in `team`, and the CA its root-CA ConfigMap holds.
const DEFAULT_ACCOUNT: [&str; 7] = [
    "get",
    "serviceaccount",
    "default",
    "-n",
    "team",
    "-o",
    "jsonpath={.metadata.name}",
];
const ROOT_CA: [&str; 7] = [
    "get",
    "configmap",
    "kube-root-ca.crt",
    "-n",
    "team",
    "-o",
    "jsonpath={.data.ca\\.crt}",
];

#[test]
fn tokens_are_minted_authenticate_and_die() {
    let c = Cluster::start();
    let k = KUBECTL_DEFAULT;

    // A new namespace gets its default account and the cluster CA.
    c.ok(k, &["create", "namespace", "team"]);
    c.wait_for_output(&DEFAULT_ACCOUNT, "default", WAIT);
    c.wait_for_output(&ROOT_CA, ca_pem(&c).trim(), WAIT);
    // ...and gets them back when they are deleted or edited.
    c.ok(k, &["delete", "serviceaccount", "default", "-n", "team"]);
    c.wait_for_output(&DEFAULT_ACCOUNT, "default", WAIT);
    c.ok(
        k,
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "-p",
            r#"{"data":{"ca.crt":"forged"}}"#,
        ],
    );
    c.wait_for_output(&ROOT_CA, ca_pem(&c).trim(), WAIT);

    for kubectl in kubectls() {
        // `kubectl create token`: a JWT for the account, an hour by default, that
        // authenticates (the account may list pods until RBAC says otherwise; what
        // matters here is that it is not refused as unauthenticated).
        let token = c.ok(kubectl, &["create", "token", "default", "-n", "team"]);
        let token = token.trim();
        let cl = claims(token);
        assert_eq!(cl["sub"], "system:serviceaccount:team:default", "{cl}");
        assert_eq!(cl["iss"], "https://kubernetes.default.svc.cluster.local");
        assert_eq!(
            cl["aud"],
            serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
        );
        assert_eq!(cl["kubernetes.io"]["namespace"], "team");
        assert_eq!(
            cl["exp"]
                .as_i64()
                .zip(cl["iat"].as_i64())
                .map(|(e, i)| e - i),
            Some(3600)
        );
        let sa_uid = c.ok(
            k,
            &[
                "get",
                "sa",
                "default",
                "-n",
                "team",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        assert_eq!(cl["kubernetes.io"]["serviceaccount"]["uid"], sa_uid.trim());
        authenticated(
            as_token(&c, kubectl, token, &["get", "pods", "-n", "team"]),
            "the token authenticates",
        );

        // --duration and --audience: a token for someone else is no login here.
        let other = c.ok(
            kubectl,
            &[
                "create",
                "token",
                "default",
                "-n",
                "team",
                "--duration",
                "20m",
                "--audience",
                "vault",
            ],
        );
        let cl = claims(other.trim());
        assert_eq!(cl["aud"], serde_json::json!(["vault"]));
        assert_eq!(
            cl["exp"]
                .as_i64()
                .zip(cl["iat"].as_i64())
                .map(|(e, i)| e - i),
            Some(1200)
        );
        unauthorized(as_token(
            &c,
            kubectl,
            other.trim(),
            &["get", "pods", "-n", "team"],
        ));
        let err = c.fails(
            kubectl,
            &[
                "create",
                "token",
                "default",
                "-n",
                "team",
                "--duration",
                "5m",
            ],
        );
        assert!(
            err.contains("may not specify a duration less than 10 minutes"),
            "{err}"
        );
        let err = c.fails(kubectl, &["create", "token", "nobody", "-n", "team"]);
        assert!(
            err.contains(r#"serviceaccounts "nobody" not found"#),
            "{err}"
        );

        // Bound to a pod: valid while the pod lives, dead once it is deleted.
        let pod = format!("holder-{}", &rand_suffix()[..6]);
        c.ok(
            kubectl,
            &[
                "run",
                &pod,
                "-n",
                "team",
                "--image",
                "registry.invalid/x:1",
                "--restart",
                "Never",
            ],
        );
        let bound = c.ok(
            kubectl,
            &[
                "create",
                "token",
                "default",
                "-n",
                "team",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                &pod,
            ],
        );
        let bound = bound.trim();
        let pod_uid = c.ok(
            k,
            &[
                "get",
                "pod",
                &pod,
                "-n",
                "team",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        assert_eq!(claims(bound)["kubernetes.io"]["pod"]["uid"], pod_uid.trim());
        authenticated(
            as_token(&c, kubectl, bound, &["get", "pods", "-n", "team"]),
            "bound token while the pod lives",
        );
        c.ok(
            k,
            &[
                "delete",
                "pod",
                &pod,
                "-n",
                "team",
                "--grace-period=0",
                "--force",
            ],
        );
        unauthorized(as_token(&c, kubectl, bound, &["get", "pods", "-n", "team"]));
        // The unbound token is untouched by that.
        authenticated(
            as_token(&c, kubectl, token, &["get", "pods", "-n", "team"]),
            "the unbound token still works",
        );
    }

    // Expired and forged tokens: 401 with Kubernetes' Status. The expired one is signed
    // with the server's own key, so only its expiry is wrong (a fresh one signed the
    // same way is accepted, which shows the forging itself is sound).
    let key = spindle_apiserver::sa_token::Signer::load_or_create(
        &c.data_dir().join("server/tls/service.key"),
    )
    .expect("the server's key");
    let sa_uid = c.ok(
        k,
        &[
            "get",
            "sa",
            "default",
            "-n",
            "team",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let mint = |iat: i64, signer: &spindle_apiserver::sa_token::Signer| {
        let claims = spindle_apiserver::sa_token::Claims::new(
            "team",
            spindle_apiserver::sa_token::ObjectRef {
                name: "default".into(),
                uid: sa_uid.trim().into(),
            },
            vec![spindle_apiserver::sa_token::ISSUER.into()],
            iat,
            3600,
        );
        signer.sign(&claims).expect("sign")
    };
    let now = chrono::Utc::now().timestamp();
    let (code, body) = raw_with_token(&c, &mint(now, &key), "/api/v1/namespaces/team/pods");
    assert!(code == "200" || code == "403", "{code} {body}");
    let stranger = spindle_apiserver::sa_token::Signer::generate().expect("another key");
    for (what, token) in [
        ("expired", mint(now - 7200, &key)),
        ("signed by another key", mint(now, &stranger)),
        ("not a JWT", "garbage".to_string()),
    ] {
        let (code, body) = raw_with_token(&c, &token, "/api/v1/namespaces/team/pods");
        assert_eq!(code, "401", "{what}: {body}");
        let status: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(
            (
                &status["kind"],
                &status["status"],
                &status["reason"],
                &status["code"]
            ),
            (
                &serde_json::json!("Status"),
                &serde_json::json!("Failure"),
                &serde_json::json!("Unauthorized"),
                &serde_json::json!(401)
            ),
            "{what}: {body}"
        );
    }

    // TokenReview says whose a token is, and why another is not valid.
    let token = c.ok(k, &["create", "token", "default", "-n", "team"]);
    let review = |t: &str| -> Value {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}});
        let f = c.write_file("review.json", &body.to_string());
        let out = c.ok(
            k,
            &[
                "create",
                "--raw",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "-f",
                f.to_str().expect("path"),
            ],
        );
        serde_json::from_str(&out).expect("a TokenReview")
    };
    let r = review(token.trim());
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:team:default"
    );
    assert_eq!(
        r["status"]["user"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );
    let r = review(&mint(now - 7200, &key));
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    assert!(
        r["status"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{r}"
    );

    // OIDC discovery publishes the key the tokens name.
    let doc: Value =
        serde_json::from_str(&c.ok(k, &["get", "--raw", "/.well-known/openid-configuration"]))
            .expect("json");
    assert_eq!(
        doc["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert!(
        doc["jwks_uri"]
            .as_str()
            .unwrap_or("")
            .ends_with("/openid/v1/jwks"),
        "{doc}"
    );
    let jwks: Value =
        serde_json::from_str(&c.ok(k, &["get", "--raw", "/openid/v1/jwks"])).expect("json");
    let header: Value = {
        let h = token.trim().split('.').next().expect("header");
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_eq!(jwks["keys"][0]["kid"], header["kid"], "{jwks}");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // The ServiceAccount admission plugin: the default account and its token volume, and
    // an account that does not exist refused in Kubernetes' words.
    c.ok(
        k,
        &[
            "run",
            "plain",
            "-n",
            "team",
            "--image",
            "registry.invalid/x:1",
        ],
    );
    assert_eq!(
        c.ok(
            k,
            &[
                "get",
                "pod",
                "plain",
                "-n",
                "team",
                "-o",
                "jsonpath={.spec.serviceAccountName}"
            ]
        ),
        "default"
    );
    let vol = c.ok(
        k,
        &[
            "get",
            "pod",
            "plain",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.volumes[0].name}",
        ],
    );
    assert!(
        vol.starts_with("kube-api-access-") && vol.len() == 21,
        "{vol}"
    );
    assert_eq!(
        c.ok(
            k,
            &[
                "get",
                "pod",
                "plain",
                "-n",
                "team",
                "-o",
                "jsonpath={.spec.containers[0].volumeMounts[0].mountPath}"
            ]
        ),
        SA_DIR
    );
    let err = c.fails(
        k,
        &[
            "run",
            "ghost",
            "-n",
            "team",
            "--image",
            "registry.invalid/x:1",
            "--overrides",
            r#"{"spec":{"serviceAccountName":"nobody"}}"#,
        ],
    );
    assert!(
        err.contains(r#"pods "ghost" is forbidden: error looking up service account team/nobody: serviceaccount "nobody" not found"#),
        "{err}"
    );
}

/// The pod's logs once its containers have finished.
fn logs(c: &Cluster, pod: &str, container: &str) -> String {
    c.ok(KUBECTL_DEFAULT, &["logs", pod, "-c", container])
}

#[test]
fn pods_read_their_credentials_and_reach_the_api_server() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/busybox:v1");
    let testbox = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    // Pods reach the API server on the node's address (its `kubernetes` endpoint).
    let c = Cluster::with_agent("sa-node", &["--bind-address", "0.0.0.0"]);
    let k = KUBECTL_DEFAULT;
    let svc_ip = c.ok(
        k,
        &[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let port = c.server_url().rsplit(':').next().expect("port").to_string();
    assert_eq!(
        c.ok(
            k,
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}"
            ]
        ),
        port
    );

    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: caller
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: files
    image: {image}
    command: ["sh", "-c", "cat {SA_DIR}/namespace; echo; cat {SA_DIR}/ca.crt; cat {SA_DIR}/token; echo; echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT tcp=$KUBERNETES_PORT_443_TCP"]
  - name: idle
    image: {image}
    command: ["sleep", "600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: guest
spec:
  restartPolicy: Never
  containers:
  - name: files
    image: {testbox}
    args: ["cat", "{SA_DIR}/namespace", "{SA_DIR}/ca.crt", "{SA_DIR}/token"]
  - name: env
    image: {testbox}
    args: ["env", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
"#
    ));
    c.wait_pod_field("guest", "{.status.phase}", "Succeeded", WAIT);
    c.wait_pod_field(
        "caller",
        "{.status.containerStatuses[?(@.name==\"files\")].state.terminated.reason}",
        "Completed",
        WAIT,
    );
    let ca = ca_pem(&c);

    // The container: namespace, CA and a token bound to it; the Service's variables.
    let out = logs(&c, "caller", "files");
    assert!(out.starts_with("default\n"), "{out}");
    assert!(out.contains(ca.trim()), "{out}");
    let token = out
        .lines()
        .find(|l| l.starts_with("eyJ"))
        .unwrap_or_else(|| panic!("no token in {out}"))
        .to_string();
    let cl = claims(&token);
    assert_eq!(cl["kubernetes.io"]["pod"]["name"], "caller", "{cl}");
    assert_eq!(
        cl["exp"]
            .as_i64()
            .zip(cl["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(3607)
    );
    assert!(
        out.contains(&format!(
            "host={} port=443 tcp=tcp://{}:443",
            svc_ip.trim(),
            svc_ip.trim()
        )),
        "{out}"
    );
    // From the pod's network namespace, to the address and port of its variables, the
    // server proves itself with the pod's ca.crt (the Service address is in its
    // certificate) and takes the pod's token: 200 now, 403 once RBAC denies the account
    // pods, never 401; without the token, 401. (curl runs in the pod's namespace because
    // busybox's TLS client sends no signature_algorithms extension, which rustls needs.)
    let uid = c.pod_field("caller", "{.metadata.uid}");
    let netns = format!("{}-{uid}", c.net.netns_prefix);
    let ca_file = c.write_file("pod-ca.crt", &ca);
    let in_pod = |auth: Option<&str>| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &netns,
            "curl",
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&ca_file);
        if let Some(t) = auth {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        cmd.arg(format!(
            "https://{}:443/api/v1/namespaces/default/pods",
            svc_ip.trim()
        ));
        let out = output_within(&mut cmd, None, KUBECTL_LIMIT);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with_token = in_pod(Some(&token));
    assert!(with_token == "200" || with_token == "403", "{with_token}");
    assert_eq!(in_pod(None), "401");
    authenticated(
        as_token(&c, k, &token, &["get", "pods"]),
        "the pod's token authenticates",
    );

    // The Wasm guest: the same files through its preopen, and the same variables.
    let out = logs(&c, "guest", "files");
    assert!(out.starts_with("default"), "{out}");
    assert!(out.contains(ca.trim()), "{out}");
    // cat prints the files back to back: the token follows the CA's last line.
    let wasm_token = out
        .rsplit("-----END CERTIFICATE-----")
        .next()
        .map(str::trim)
        .filter(|t| t.starts_with("eyJ"))
        .unwrap_or_else(|| panic!("no token in {out}"))
        .to_string();
    assert_eq!(claims(&wasm_token)["kubernetes.io"]["pod"]["name"], "guest");
    assert_eq!(
        logs(&c, "guest", "env").trim(),
        format!(
            "KUBERNETES_SERVICE_HOST={}\nKUBERNETES_SERVICE_PORT=443",
            svc_ip.trim()
        )
    );
    authenticated(
        as_token(&c, k, &wasm_token, &["get", "pods"]),
        "the guest's token authenticates",
    );

    // Deleting the pod kills the token it held.
    c.ok(k, &["delete", "pod", "guest", "--wait=true"]);
    unauthorized(as_token(&c, k, &wasm_token, &["get", "pods"]));
}

/// Legacy token Secrets, only when asked for: nothing makes one unasked; a Secret of type
/// `kubernetes.io/service-account-token` naming an account gets a non-expiring token (the
/// legacy claims), the CA and the namespace, and the account's uid; the token works with
/// `kubectl --token` while the Secret and the account exist; deleting the Secret kills
/// it, and a Secret whose account is gone is deleted by the controller.
#[test]
fn legacy_token_secrets_are_filled_only_when_asked_and_die_with_their_secret() {
    let c = Cluster::start();
    let k = KUBECTL_DEFAULT;
    c.ok(k, &["create", "namespace", "legacy"]);
    c.ok(k, &["create", "serviceaccount", "builder", "-n", "legacy"]);
    let token_secrets = || {
        c.ok(
            k,
            &[
                "get",
                "secrets",
                "-A",
                "--field-selector",
                "type=kubernetes.io/service-account-token",
                "-o",
                "name",
            ],
        )
    };
    assert_eq!(token_secrets(), "", "no token Secret is made unasked");

    let secret = |name: &str, account: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: legacy\n  annotations:\n    kubernetes.io/service-account.name: {account}\ntype: kubernetes.io/service-account-token\n"
        )
    };
    // One that names no account is refused, as kube-apiserver refuses it.
    let unnamed = c.write_file(
        "unnamed-token.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: unnamed\n  namespace: legacy\ntype: kubernetes.io/service-account-token\n",
    );
    let err = c.fails(k, &["create", "-f", unnamed.to_str().expect("utf-8 path")]);
    assert!(
        err.contains(r#"Secret "unnamed" is invalid: metadata.annotations[kubernetes.io/service-account.name]: Required value"#),
        "{err}"
    );
    c.apply(&secret("builder-token", "builder"));
    let field = |path: &str| {
        c.ok(
            k,
            &[
                "get",
                "secret",
                "builder-token",
                "-n",
                "legacy",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while field("{.data.token}").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the token was never filled in"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let b64 = |s: String| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let token = b64(field("{.data.token}"));
    assert_eq!(b64(field("{.data.namespace}")), "legacy");
    assert_eq!(b64(field("{.data.ca\\.crt}")), ca_pem(&c));
    let uid = c.ok(
        k,
        &[
            "get",
            "sa",
            "builder",
            "-n",
            "legacy",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    assert_eq!(
        field("{.metadata.annotations.kubernetes\\.io/service-account\\.uid}"),
        uid
    );
    let cl = claims(&token);
    assert_eq!(cl["iss"], "kubernetes/serviceaccount", "{cl}");
    assert_eq!(cl["sub"], "system:serviceaccount:legacy:builder", "{cl}");
    assert_eq!(
        cl["kubernetes.io/serviceaccount/namespace"], "legacy",
        "{cl}"
    );
    assert_eq!(
        cl["kubernetes.io/serviceaccount/secret.name"], "builder-token",
        "{cl}"
    );
    assert_eq!(
        cl["kubernetes.io/serviceaccount/service-account.name"], "builder",
        "{cl}"
    );
    assert_eq!(
        cl["kubernetes.io/serviceaccount/service-account.uid"],
        uid.as_str(),
        "{cl}"
    );
    assert!(
        cl.get("exp").is_none(),
        "a legacy token does not expire: {cl}"
    );

    // kubectl --token: the account, with its groups (the admin kubeconfig's certificate
    // comes along and the bearer token wins, as on kube-apiserver).
    let whoami = |token: &str| {
        c.kubectl(
            k,
            &[
                "--token",
                token,
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
            ],
        )
    };
    let out = whoami(&token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"system:serviceaccount:legacy:builder ["system:serviceaccounts","system:serviceaccounts:legacy","system:authenticated"]"#
    );
    for kubectl in kubectls() {
        authenticated(
            as_token(&c, kubectl, &token, &["get", "pods", "-n", "legacy"]),
            kubectl,
        );
    }
    // A second Secret for the same account: a token of its own, which outlives the first.
    c.apply(&secret("second-token", "builder"));
    let second_deadline = std::time::Instant::now() + WAIT;
    let second = loop {
        let t = c.ok(
            k,
            &[
                "get",
                "secret",
                "second-token",
                "-n",
                "legacy",
                "-o",
                "jsonpath={.data.token}",
            ],
        );
        if !t.is_empty() {
            break b64(t);
        }
        assert!(
            std::time::Instant::now() < second_deadline,
            "second token never filled"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(second, token);

    // Deleting the Secret kills its token: 401.
    c.ok(k, &["delete", "secret", "builder-token", "-n", "legacy"]);
    let (code, body) = raw_with_token(&c, &token, "/api/v1/namespaces/legacy/pods");
    assert_eq!(code, "401", "{body}");
    unauthorized(as_token(
        &c,
        KUBECTL_DEFAULT,
        &token,
        &["get", "pods", "-n", "legacy"],
    ));
    authenticated(
        as_token(&c, k, &second, &["get", "pods", "-n", "legacy"]),
        "second",
    );

    // The account goes: its remaining token Secret is deleted, and its token dies.
    c.ok(k, &["delete", "serviceaccount", "builder", "-n", "legacy"]);
    let gone_deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = c.kubectl(k, &["get", "secret", "second-token", "-n", "legacy"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && err.contains("NotFound") {
            break;
        }
        assert!(
            std::time::Instant::now() < gone_deadline,
            "the Secret of a deleted account was kept: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = raw_with_token(&c, &second, "/api/v1/namespaces/legacy/pods");
    assert_eq!(code, "401", "{body}");
}
