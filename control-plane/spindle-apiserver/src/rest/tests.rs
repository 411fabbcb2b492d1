//! The REST path over a real store in a temporary directory, request by request as the
//! router hands them over: storage, the verbs, the kinds' strategies and admission.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use spindle_api::openapi::OpenApi;
use spindle_api::Registry;
use spindle_store::{SledStore, SledStoreOptions};

use crate::request::{parse_path, Query};
use crate::{alloc, watch, AppState, User};

struct Api {
    st: AppState,
    _dir: tempfile::TempDir,
}

const TOLERATION_SECONDS: i64 = 300;

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), SledStoreOptions::default()).expect("store");
        let reg = Registry::new();
        let openapi = OpenApi::new(&reg);
        let st = AppState {
            reg: Arc::new(reg),
            store: Arc::new(store),
            openapi: Arc::new(openapi),
            tokens: Arc::new(Vec::new()),
            sa_signer: Arc::new(crate::sa_token::Signer::generate().expect("signer")),
            ca_pem: Arc::from(""),
            default_toleration_seconds: TOLERATION_SECONDS,
            event_cache: Arc::new(watch::EventCache::default()),
            kubelet_client: None,
            net: alloc::NetRanges::default(),
            authz: Arc::default(),
        };
        crate::bootstrap(&st).await.expect("bootstrap");
        let api = Api { st, _dir: dir };
        // What the ServiceAccount controller makes in every namespace.
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        api.ok(
            Method::POST,
            "/api/v1/namespaces/default/serviceaccounts",
            Some(sa),
        )
        .await;
        api
    }

    /// Send one request; the status code and the JSON body.
    async fn call(&self, method: Method, path_query: &str, body: Option<Value>) -> (u16, Value) {
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        let t = parse_path(&self.st.reg, path)
            .expect("path")
            .expect("a resource path");
        let mut headers = HeaderMap::new();
        let ct = if method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        let user = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let resp = super::handle(
            self.st.clone(),
            user,
            method,
            t,
            Query::parse(query),
            headers,
            body,
        )
        .await;
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (code, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    }
}

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn create_runs_the_pod_strategy_and_admission() {
    let api = Api::new().await;
    let created = api
        .ok(
            Method::POST,
            PODS,
            Some(pod("p", json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
        )
        .await;
    assert_eq!(
        created["status"],
        json!({"phase": "Pending", "qosClass": "Guaranteed"})
    );
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    let tolerations = created["spec"]["tolerations"]
        .as_array()
        .expect("tolerations");
    assert_eq!(tolerations.len(), 2, "{tolerations:?}");
    assert!(tolerations
        .iter()
        .all(|t| t["tolerationSeconds"] == TOLERATION_SECONDS));

    let read = api.ok(Method::GET, &format!("{PODS}/p"), None).await;
    assert_eq!(read["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        read["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // Quantities are compared by value (1Gi is 1024Mi), and generateName gets a suffix.
    let mut same = pod(
        "",
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "0.5", "memory": "1024Mi"}}),
    );
    same["metadata"] = json!({"generateName": "same-"});
    let created = api.ok(Method::POST, PODS, Some(same)).await;
    assert_eq!(created["status"]["qosClass"], "Guaranteed");
    let name = created["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("same-") && name.len() == "same-".len() + 5,
        "{name}"
    );

    // NamespaceLifecycle: nothing is created in a namespace that does not exist.
    let (code, err) = api
        .call(
            Method::POST,
            "/api/v1/namespaces/nowhere/pods",
            Some(pod("q", json!({}))),
        )
        .await;
    assert_eq!(
        (code, err["reason"].as_str()),
        (404, Some("NotFound")),
        "{err}"
    );
    assert_eq!(err["details"]["name"], "nowhere");
}

#[tokio::test]
async fn lists_page_with_continue_tokens() {
    let api = Api::new().await;
    for n in ["a", "b", "c"] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {"k": n}});
        api.ok(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(cm),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/configmaps?limit=2".to_string();
    loop {
        let page = api.ok(Method::GET, &path, None).await;
        assert_eq!(page["kind"], "ConfigMapList");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        names.extend(items.iter().map(|i| i["metadata"]["name"].clone()));
        match page["metadata"]["continue"].as_str() {
            Some(tok) => {
                path = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={tok}")
            }
            None => break,
        }
    }
    assert_eq!(names, [json!("a"), json!("b"), json!("c")]);
}

#[tokio::test]
async fn updates_keep_status_bump_generation_and_check_preconditions() {
    let api = Api::new().await;
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let path = "/apis/apps/v1/namespaces/default/replicasets/rs";
    let created = api
        .ok(
            Method::POST,
            "/apis/apps/v1/namespaces/default/replicasets",
            Some(rs),
        )
        .await;
    assert_eq!(created["status"], json!({}));

    // A status write changes only the status, and not the generation.
    let st = api
        .ok(
            Method::PATCH,
            &format!("{path}/status"),
            Some(json!({"spec": {"replicas": 9}, "status": {"replicas": 1}})),
        )
        .await;
    assert_eq!(
        (
            st["spec"]["replicas"].clone(),
            st["status"]["replicas"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(st["metadata"]["generation"], 1);

    // A main-resource write keeps the stored status and bumps the generation.
    let up = api
        .ok(
            Method::PATCH,
            path,
            Some(json!({"spec": {"replicas": 3}, "status": {"replicas": 7}})),
        )
        .await;
    assert_eq!(up["status"]["replicas"], 1);
    assert_eq!(up["metadata"]["generation"], 2);

    // The strategy's immutable selector, and a stale resourceVersion.
    let (code, err) = api
        .call(
            Method::PATCH,
            path,
            Some(json!({"spec": {"selector": {"matchLabels": {"app": "b"}}, "template": {"metadata": {"labels": {"app": "b"}}}}})),
        )
        .await;
    assert_eq!(code, 422, "{err}");
    assert_eq!(err["details"]["causes"][0]["field"], "spec.selector");
    let mut stale = created.clone();
    stale["spec"]["replicas"] = json!(5);
    let (code, err) = api.call(Method::PUT, path, Some(stale)).await;
    assert_eq!(
        (code, err["reason"].as_str()),
        (409, Some("Conflict")),
        "{err}"
    );
}

#[tokio::test]
async fn deletion_follows_the_kind_grace_period() {
    let api = Api::new().await;
    api.ok(Method::POST, PODS, Some(pod("unbound", json!({}))))
        .await;
    let mut bound = pod("bound", json!({}));
    bound["spec"]["nodeName"] = json!("n1");
    bound["spec"]["terminationGracePeriodSeconds"] = json!(45);
    api.ok(Method::POST, PODS, Some(bound)).await;

    // An unbound pod goes at once.
    api.ok(Method::DELETE, &format!("{PODS}/unbound"), None)
        .await;
    let (code, _) = api
        .call(Method::GET, &format!("{PODS}/unbound"), None)
        .await;
    assert_eq!(code, 404);

    // A bound one is marked with its grace period and stays for its node to stop it.
    let gone = api.ok(Method::DELETE, &format!("{PODS}/bound"), None).await;
    assert_eq!(gone["metadata"]["deletionGracePeriodSeconds"], 45);
    let still = api.ok(Method::GET, &format!("{PODS}/bound"), None).await;
    assert!(
        still["metadata"]["deletionTimestamp"].is_string(),
        "{still}"
    );
    api.ok(
        Method::DELETE,
        &format!("{PODS}/bound?gracePeriodSeconds=0"),
        None,
    )
    .await;
    let (code, _) = api.call(Method::GET, &format!("{PODS}/bound"), None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn replication_controllers_scale_through_their_subresource() {
    let api = Api::new().await;
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}});
    let created = api
        .ok(
            Method::POST,
            "/api/v1/namespaces/default/replicationcontrollers",
            Some(rc),
        )
        .await;
    assert_eq!(
        created["spec"]["selector"],
        json!({"app": "web", "tier": "fe"})
    );
    assert_eq!(created["metadata"]["generation"], 1);
    let path = "/api/v1/namespaces/default/replicationcontrollers/web/scale";
    let scale = api.ok(Method::GET, path, None).await;
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web,tier=fe");
    let scaled = api
        .ok(Method::PATCH, path, Some(json!({"spec": {"replicas": 4}})))
        .await;
    assert_eq!(scaled["spec"]["replicas"], 4);
    let rc = api
        .ok(
            Method::GET,
            "/api/v1/namespaces/default/replicationcontrollers/web",
            None,
        )
        .await;
    assert_eq!(
        (
            rc["spec"]["replicas"].clone(),
            rc["metadata"]["generation"].clone()
        ),
        (json!(4), json!(2))
    );
}

#[tokio::test]
async fn a_job_must_name_its_restart_policy() {
    let api = Api::new().await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let (code, err) = api
        .call(
            Method::POST,
            "/apis/batch/v1/namespaces/default/jobs",
            Some(job),
        )
        .await;
    assert_eq!(code, 422, "{err}");
    assert_eq!(
        err["message"],
        "Job.batch \"j\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
    );
}

#[tokio::test]
async fn deletion_answers_with_a_status_or_the_object_as_the_kind_says() {
    let api = Api::new().await;
    const CMS: &str = "/api/v1/namespaces/default/configmaps";
    let cm = |name: &str, finalizers: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "finalizers": finalizers}})
    };
    let gone = api.ok(Method::POST, CMS, Some(cm("gone", json!([])))).await;
    // Removed at once, of a kind that does not return the deleted object: a Success
    // Status naming it by resource and uid (no code, no group for the core group).
    let (code, status) = api.call(Method::DELETE, &format!("{CMS}/gone"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "gone", "kind": "configmaps", "uid": gone["metadata"]["uid"]}})
    );
    // A dry run answers as the deletion would.
    api.ok(Method::POST, CMS, Some(cm("dry", json!([])))).await;
    let dry = api
        .ok(Method::DELETE, &format!("{CMS}/dry?dryRun=All"), None)
        .await;
    assert_eq!(dry["kind"], "Status", "{dry}");

    // Another group names it.
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    api.ok(Method::POST, deploys, Some(deploy)).await;
    let status = api.ok(Method::DELETE, &format!("{deploys}/d"), None).await;
    assert_eq!(
        (&status["details"]["group"], &status["details"]["kind"]),
        (&json!("apps"), &json!("deployments"))
    );

    // Kinds that return the deleted object (service accounts, pods...) answer with it.
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    api.ok(Method::POST, sas, Some(sa)).await;
    let deleted = api.ok(Method::DELETE, &format!("{sas}/robot"), None).await;
    assert_eq!(
        (&deleted["kind"], &deleted["metadata"]["name"]),
        (&json!("ServiceAccount"), &json!("robot"))
    );

    // Still there (a finalizer holds it): the object with its deletionTimestamp, 200, or
    // 202 when the client sent orphanDependents false.
    api.ok(Method::POST, CMS, Some(cm("held", json!(["x/y"]))))
        .await;
    let (code, held) = api.call(Method::DELETE, &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (code, held) = api
        .call(
            Method::DELETE,
            &format!("{CMS}/held"),
            Some(json!({"orphanDependents": false})),
        )
        .await;
    assert_eq!((code, &held["kind"]), (202, &json!("ConfigMap")), "{held}");
}

#[tokio::test]
async fn deletecollection_answers_with_the_list_it_deleted_from() {
    let api = Api::new().await;
    const CMS: &str = "/api/v1/namespaces/default/configmaps";
    for (name, finalizers) in [("a", json!([])), ("b", json!(["x/y"]))] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "finalizers": finalizers}});
        api.ok(Method::POST, CMS, Some(cm)).await;
    }
    let list = api.ok(Method::DELETE, CMS, None).await;
    assert_eq!(list["kind"], "ConfigMapList");
    let items = list["items"].as_array().expect("items");
    let names: Vec<&Value> = items.iter().map(|i| &i["metadata"]["name"]).collect();
    assert_eq!(names, [&json!("a"), &json!("b")]);
    // As they were listed, before the deletion marked the one that stays.
    assert!(items
        .iter()
        .all(|i| i["metadata"].get("deletionTimestamp").is_none()));
    let (code, _) = api.call(Method::GET, &format!("{CMS}/a"), None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn subresources_a_kind_lacks_are_not_found_and_wrong_methods_not_allowed() {
    let api = Api::new().await;
    const CMS: &str = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    api.ok(Method::POST, CMS, Some(cm)).await;
    for (method, path) in [
        (Method::GET, format!("{CMS}/c/status")),
        (Method::PUT, format!("{CMS}/c/status")),
        (Method::GET, format!("{CMS}/c/scale")),
        (Method::GET, format!("{CMS}/c/log")),
        (Method::POST, format!("{CMS}/c/eviction")),
        (
            Method::GET,
            "/apis/apps/v1/namespaces/default/daemonsets/d/scale".into(),
        ),
    ] {
        let (code, v) = api.call(method.clone(), &path, None).await;
        assert_eq!(
            (code, &v["message"]),
            (
                404,
                &json!("the server could not find the requested resource")
            ),
            "{method} {path}"
        );
    }
    for (method, path) in [
        (Method::DELETE, format!("{PODS}/p/status")),
        (Method::POST, format!("{PODS}/p/log")),
        (Method::PUT, format!("{PODS}/p/exec")),
        (Method::GET, format!("{PODS}/p/binding")),
    ] {
        let (code, v) = api.call(method.clone(), &path, None).await;
        assert_eq!(
            (code, &v["message"]),
            (
                405,
                &json!("the server does not allow this method on the requested resource")
            ),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn service_account_admission_defaults_mounts_and_refuses() {
    let api = Api::new().await;
    let created = api.ok(Method::POST, PODS, Some(pod("p", json!({})))).await;
    assert_eq!(created["spec"]["serviceAccountName"], "default");
    assert_eq!(created["spec"]["serviceAccount"], "default");
    let vol = &created["spec"]["volumes"][0];
    let vname = vol["name"].as_str().expect("volume name");
    assert!(vname.starts_with("kube-api-access-"), "{vname}");
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(
        created["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": vname, "readOnly": true,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    );

    // automountServiceAccountToken: false on the pod, or on its account, mounts nothing.
    let mut off = pod("off", json!({}));
    off["spec"]["automountServiceAccountToken"] = json!(false);
    let created = api.ok(Method::POST, PODS, Some(off)).await;
    assert!(created["spec"].get("volumes").is_none(), "{created}");
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    api.ok(
        Method::POST,
        sas,
        Some(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "quiet"}, "automountServiceAccountToken": false})),
    )
    .await;
    let mut quiet = pod("quiet", json!({}));
    quiet["spec"]["serviceAccountName"] = json!("quiet");
    let created = api.ok(Method::POST, PODS, Some(quiet)).await;
    assert!(created["spec"].get("volumes").is_none(), "{created}");

    // A missing account is refused in Kubernetes' words.
    let mut ghost = pod("ghost", json!({}));
    ghost["spec"]["serviceAccountName"] = json!("nobody");
    let (code, body) = api.call(Method::POST, PODS, Some(ghost)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "pods \"ghost\" is forbidden: error looking up service account default/nobody: serviceaccount \"nobody\" not found"
    );
}

#[tokio::test]
async fn token_requests_mint_tokens_that_die_with_their_pod() {
    let api = Api::new().await;
    let token_path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let tr = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let out = api.ok(Method::POST, token_path, Some(tr(json!({})))).await;
    assert_eq!(out["kind"], "TokenRequest");
    assert_eq!(out["spec"]["expirationSeconds"], 3600);
    assert_eq!(out["spec"]["audiences"], json!([crate::sa_token::ISSUER]));
    let token = out["status"]["token"].as_str().expect("token").to_string();
    let user = crate::sa_token::authenticate(&api.st, &token)
        .await
        .expect("a user");
    assert_eq!(user.name, "system:serviceaccount:default:default");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );

    // Too short a lifetime, an account that does not exist.
    let (code, body) = api
        .call(
            Method::POST,
            token_path,
            Some(tr(json!({"expirationSeconds": 60}))),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("may not specify a duration less than 10 minutes"),
        "{body}"
    );
    let (code, _) = api
        .call(
            Method::POST,
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            Some(tr(json!({}))),
        )
        .await;
    assert_eq!(code, 404);

    // Bound to a pod: dies with the pod.
    let p = api
        .ok(Method::POST, PODS, Some(pod("holder", json!({}))))
        .await;
    let bound = api
        .ok(
            Method::POST,
            token_path,
            Some(tr(json!({"audiences": ["vault"],
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "holder"}}))),
        )
        .await;
    assert_eq!(bound["spec"]["boundObjectRef"]["uid"], p["metadata"]["uid"]);
    let btok = bound["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    // For another audience than the API server's, it does not authenticate here...
    assert!(crate::sa_token::authenticate(&api.st, &btok)
        .await
        .is_none());
    // ...but a review for its audience accepts it while the pod lives.
    let claims = crate::sa_token::review(&api.st, &btok, &["vault".into()])
        .await
        .expect("valid");
    assert_eq!(claims.kubernetes.pod.map(|p| p.name), Some("holder".into()));
    api.ok(
        Method::DELETE,
        &format!("{PODS}/holder?gracePeriodSeconds=0"),
        None,
    )
    .await;
    assert_eq!(
        crate::sa_token::review(&api.st, &btok, &["vault".into()]).await,
        Err(crate::sa_token::TokenError::Invalidated)
    );
    // A wrong uid in the reference is a conflict; the account's token dies with it.
    let (code, _) = api
        .call(
            Method::POST,
            token_path,
            Some(tr(json!({"boundObjectRef":
            {"kind": "Pod", "apiVersion": "v1", "name": "p2", "uid": "x"}}))),
        )
        .await;
    assert_eq!(code, 404);
    api.ok(
        Method::DELETE,
        "/api/v1/namespaces/default/serviceaccounts/default",
        None,
    )
    .await;
    assert!(crate::sa_token::authenticate(&api.st, &token)
        .await
        .is_none());
}
