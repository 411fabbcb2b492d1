//! LimitRange and ResourceQuota end to end, with each supported kubectl: defaults given
//! to a pod that names no resources, pods over a limit or a quota refused in
//! Kubernetes' words, `kubectl create quota`, `kubectl describe quota|limits`, the
//! resourcequota controller returning what a deleted pod held, no over-admission from
//! parallel creates, and bad LimitRanges and quotas refused with their field paths.
//! The cluster runs no agent: pods stay Pending, which is all admission needs.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;

const WAIT: Duration = Duration::from_secs(60);

fn limit_range(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: LimitRange
metadata:
  name: limits
  namespace: {ns}
spec:
  limits:
  - type: Container
    default: {{cpu: 500m, memory: 256Mi}}
    defaultRequest: {{cpu: 100m, memory: 128Mi}}
    max: {{memory: 1Gi}}
"#
    )
}

fn pod(ns: &str, name: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  containers:
  - name: app
    image: 127.0.0.1:1/none:1
{resources}"#
    )
}

/// `kubectl create -f -` of `manifest`: its stdout, or its stderr when refused.
fn create(c: &Cluster, k: &str, manifest: &str) -> Result<String, String> {
    let out = c.apply_stdin(k, &["create", "-f", "-"], manifest);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// A LimitRange `bad` of one Container limit whose bounds are `bounds` (YAML lines).
fn bad_limit_range(ns: &str, bounds: &str) -> String {
    format!(
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\n  namespace: {ns}\nspec:\n  limits:\n  - type: Container\n{bounds}"
    )
}

/// Whether `text` has a line whose words are `words` (describe's aligned tables).
fn has_row(text: &str, words: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == words)
}

#[test]
fn limit_ranges_default_and_bound_containers() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("lr{i}");
        c.ok(k, &["create", "namespace", &ns]);
        create(&c, k, &limit_range(&ns)).expect("LimitRange");

        // A pod without resources gets the defaults, and says who set them.
        create(&c, k, &pod(&ns, "plain", "")).expect("plain pod");
        let get = |path: &str| {
            c.ok(
                k,
                &[
                    "get",
                    "pod",
                    "plain",
                    "-n",
                    &ns,
                    "-o",
                    &format!("jsonpath={path}"),
                ],
            )
        };
        assert_eq!(get("{.spec.containers[0].resources.requests.cpu}"), "100m");
        assert_eq!(
            get("{.spec.containers[0].resources.requests.memory}"),
            "128Mi"
        );
        assert_eq!(get("{.spec.containers[0].resources.limits.cpu}"), "500m");
        assert_eq!(
            get("{.spec.containers[0].resources.limits.memory}"),
            "256Mi"
        );
        assert_eq!(
            get("{.metadata.annotations.kubernetes\\.io/limit-ranger}"),
            "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
        );
        assert_eq!(get("{.status.qosClass}"), "Burstable");

        // A container over the maximum is refused in kube's words.
        let big = pod(&ns, "big", "    resources:\n      limits: {memory: 2Gi}\n");
        let err = create(&c, k, &big).expect_err("big admitted");
        assert!(
            err.contains(r#"Error from server (Forbidden): error when creating "STDIN": pods "big" is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi"#),
            "{k}: {err}"
        );
        let out = c.kubectl(k, &["get", "pod", "big", "-n", &ns]);
        assert!(!out.status.success(), "{k}: big exists");

        // The table, describe and explain.
        let explained = c.ok(k, &["explain", "limitrange.spec.limits.defaultRequest"]);
        assert!(
            explained.contains("DefaultRequest is the default resource requirement request value"),
            "{k}: {explained}"
        );
        let table = c.ok(k, &["get", "limits", "-n", &ns]);
        assert!(
            table.starts_with("NAME") && table.contains("CREATED AT"),
            "{k}: {table}"
        );
        let described = c.ok(k, &["describe", "limits", "limits", "-n", &ns]);
        assert!(
            has_row(
                &described,
                &["Container", "memory", "-", "1Gi", "128Mi", "256Mi", "-"]
            ),
            "{k}: {described}"
        );
        assert!(
            has_row(
                &described,
                &["Container", "cpu", "-", "-", "100m", "500m", "-"]
            ),
            "{k}: {described}"
        );

        // Bad LimitRanges: bounds out of order, an unknown resource, a bad quantity.
        let order = "    min: {memory: 2Gi}\n    max: {memory: 1Gi}\n";
        let err = create(&c, k, &bad_limit_range(&ns, order)).expect_err("bounds out of order");
        assert!(
            err.contains(r#"The LimitRange "bad" is invalid"#),
            "{k}: {err}"
        );
        assert!(
            err.contains(r#"spec.limits[0].min[memory]: Invalid value: "2Gi": min value 2Gi is greater than max value 1Gi"#),
            "{k}: {err}"
        );
        let names = "    max: {gpus: 1, memory: lots}\n";
        let err = create(&c, k, &bad_limit_range(&ns, names)).expect_err("bad names");
        assert!(
            err.contains(r#"spec.limits[0].max[gpus]: Invalid value: "gpus": must be a standard resource for containers"#),
            "{k}: {err}"
        );
        assert!(
            err.contains(r#"spec.limits[0].max[memory]: Invalid value: "lots""#),
            "{k}: {err}"
        );
    }
}

#[test]
fn a_pod_quota_refuses_the_third_pod_until_one_goes() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("q{i}");
        c.ok(k, &["create", "namespace", &ns]);
        c.ok(k, &["create", "quota", "q", "--hard=pods=2", "-n", &ns]);
        // The controller fills the status in; until then the quota is not enforced.
        let hard = [
            "get",
            "quota",
            "q",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.hard.pods}/{.status.used.pods}",
        ];
        c.wait_for_output(&hard, "2/0", WAIT);
        c.ok(k, &["run", "p1", "--image=127.0.0.1:1/none:1", "-n", &ns]);
        c.ok(k, &["run", "p2", "--image=127.0.0.1:1/none:1", "-n", &ns]);
        let err = c.fails(k, &["run", "p3", "--image=127.0.0.1:1/none:1", "-n", &ns]);
        assert!(
            err.contains(r#"Error from server (Forbidden): pods "p3" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#),
            "{k}: {err}"
        );

        let described = c.ok(k, &["describe", "quota", "q", "-n", &ns]);
        assert!(
            has_row(&described, &["Resource", "Used", "Hard"]),
            "{k}: {described}"
        );
        assert!(has_row(&described, &["pods", "2", "2"]), "{k}: {described}");
        let namespace = c.ok(k, &["describe", "namespace", &ns]);
        assert!(namespace.contains("Resource Quotas"), "{k}: {namespace}");
        assert!(has_row(&namespace, &["pods", "2", "2"]), "{k}: {namespace}");
        let table = c.ok(k, &["get", "quota", "-n", &ns]);
        assert!(
            has_row(&table, &["NAME", "AGE", "REQUEST", "LIMIT"]),
            "{k}: {table}"
        );
        assert!(table.contains("pods: 2/2"), "{k}: {table}");

        // A deleted pod's share comes back through the controller.
        c.ok(k, &["delete", "pod", "p1", "-n", &ns, "--wait=false"]);
        c.wait_for_output(&hard, "2/1", WAIT);
        c.ok(k, &["run", "p3", "--image=127.0.0.1:1/none:1", "-n", &ns]);
        c.wait_for_output(&hard, "2/2", WAIT);
    }
}

#[test]
fn compute_quotas_require_and_count_requests_and_limits() {
    let c = Cluster::start();
    let k = KUBECTL_DEFAULT;
    c.ok(k, &["create", "namespace", "compute"]);
    c.ok(
        k,
        &[
            "create",
            "quota",
            "c",
            "--hard=requests.cpu=1,limits.memory=1Gi,count/services=1",
            "-n",
            "compute",
        ],
    );
    let status = [
        "get",
        "quota",
        "c",
        "-n",
        "compute",
        "-o",
        "jsonpath={.status.used}",
    ];
    c.wait_for_output(
        &status,
        r#"{"count/services":"0","limits.memory":"0","requests.cpu":"0"}"#,
        WAIT,
    );

    let err = create(&c, k, &pod("compute", "bare", "")).expect_err("bare admitted");
    assert!(
        err.contains(r#"pods "bare" is forbidden: failed quota: c: must specify limits.memory for: app; requests.cpu for: app"#),
        "{err}"
    );
    let sized = "    resources:\n      requests: {cpu: 600m}\n      limits: {memory: 512Mi}\n";
    create(&c, k, &pod("compute", "a", sized)).expect("a within quota");
    let err = create(&c, k, &pod("compute", "b", sized)).expect_err("b admitted");
    assert!(
        err.contains(r#"pods "b" is forbidden: exceeded quota: c, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"#),
        "{err}"
    );
    // Object counts (a namespace's own ConfigMap kube-root-ca.crt would muddle configmaps).
    c.ok(
        k,
        &[
            "create",
            "service",
            "clusterip",
            "one",
            "--tcp=80",
            "-n",
            "compute",
        ],
    );
    let err = c.fails(
        k,
        &[
            "create",
            "service",
            "clusterip",
            "two",
            "--tcp=80",
            "-n",
            "compute",
        ],
    );
    assert!(
        err.contains(r#"services "two" is forbidden: exceeded quota: c, requested: count/services=1, used: count/services=1, limited: count/services=1"#),
        "{err}"
    );
    let described = c.ok(k, &["describe", "quota", "c", "-n", "compute"]);
    assert!(
        has_row(&described, &["limits.memory", "512Mi", "1Gi"]),
        "{described}"
    );
    assert!(
        has_row(&described, &["requests.cpu", "600m", "1"]),
        "{described}"
    );

    // Bad quotas: a negative count, a resource quota does not know.
    for k in kubectls() {
        let err = c.fails(
            k,
            &["create", "quota", "bad", "--hard=pods=-1", "-n", "compute"],
        );
        assert!(
            err.contains(
                r#"spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0"#
            ),
            "{k}: {err}"
        );
        let err = c.fails(
            k,
            &[
                "create",
                "quota",
                "bad",
                "--hard=widgets=1",
                "-n",
                "compute",
            ],
        );
        assert!(
            err.contains(r#"spec.hard[widgets]: Invalid value: "widgets": must be a standard resource for quota"#),
            "{k}: {err}"
        );
    }
}

/// Scoped quotas count only the pods they select; a claim LimitRange bounds storage.
#[test]
fn scoped_quotas_and_claim_limits() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("scoped{i}");
        c.ok(k, &["create", "namespace", &ns]);
        c.ok(
            k,
            &[
                "create",
                "quota",
                "be",
                "--hard=pods=1",
                "--scopes=BestEffort",
                "-n",
                &ns,
            ],
        );
        let used = [
            "get",
            "quota",
            "be",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.used.pods}",
        ];
        c.wait_for_output(&used, "0", WAIT);
        create(&c, k, &pod(&ns, "free1", "")).expect("first BestEffort pod");
        let err = create(&c, k, &pod(&ns, "free2", "")).expect_err("second BestEffort pod");
        assert!(
            err.contains(r#"pods "free2" is forbidden: exceeded quota: be, requested: pods=1, used: pods=1, limited: pods=1"#),
            "{k}: {err}"
        );
        let sized = "    resources:\n      requests: {cpu: 10m}\n";
        create(&c, k, &pod(&ns, "burstable", sized)).expect("a Burstable pod is out of scope");

        let claims = format!(
            "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: storage\n  namespace: {ns}\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    max: {{storage: 1Gi}}\n"
        );
        create(&c, k, &claims).expect("claim LimitRange");
        let claim = |name: &str, size: &str| {
            format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {{storage: {size}}}\n"
            )
        };
        create(&c, k, &claim("small", "512Mi")).expect("a claim within bounds");
        let err = create(&c, k, &claim("big", "2Gi")).expect_err("a claim over max");
        assert!(
            err.contains(r#"persistentvolumeclaims "big" is forbidden: maximum storage usage per PersistentVolumeClaim is 1Gi, but request is 2Gi"#),
            "{k}: {err}"
        );
    }
}

/// Parallel creates against a nearly full quota: exactly the room left is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_never_exceed_the_quota() {
    let c = Cluster::start();
    c.ok(KUBECTL_DEFAULT, &["create", "namespace", "race"]);
    c.ok(
        KUBECTL_DEFAULT,
        &["create", "quota", "q", "--hard=pods=3", "-n", "race"],
    );
    c.wait_for_output(
        &[
            "get",
            "quota",
            "q",
            "-n",
            "race",
            "-o",
            "jsonpath={.status.used.pods}",
        ],
        "0",
        WAIT,
    );
    let pods: Api<Pod> = Api::namespaced(c.kube_client().await, "race");
    let creates = (0..12).map(|i| {
        let pods = pods.clone();
        async move {
            let p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("p{i}")},
                "spec": {"containers": [{"name": "app", "image": "127.0.0.1:1/none:1"}]}
            }))
            .expect("pod");
            pods.create(&PostParams::default(), &p).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(kube::Error::Api(e)) = r {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(e.message.contains("exceeded quota: q"), "{e:?}");
        }
    }
    assert_eq!(admitted, 3, "{results:?}");
    let stored = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(stored, 3);
}
