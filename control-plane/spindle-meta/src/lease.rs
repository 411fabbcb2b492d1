//! A node's heartbeat as the kubelet writes it: its Lease in `kube-node-lease`, renewed
//! every 10 s, and the conditions a healthy kubelet posts on the Node. Shared by the real
//! agent and the hollow (simulated) nodes, so both look the same to the node lifecycle
//! controller and to `kubectl describe node`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// As the kubelet: renew at a quarter of the lease duration.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(10);

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    heartbeat: &Timestamp,
    since: &Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(*heartbeat)),
        last_transition_time: Some(Time(*since)),
    }
}

/// The conditions a healthy kubelet posts. The pressure conditions transition with Ready:
/// both start when this kubelet (re)started reporting.
pub fn conditions(heartbeat: Timestamp, ready_since: Timestamp) -> Vec<NodeCondition> {
    let (h, s) = (&heartbeat, &ready_since);
    vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            h,
            s,
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            h,
            s,
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            h,
            s,
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            h,
            s,
        ),
    ]
}

/// The Lease of node `name` as the kubelet creates it, owned by its Node when the Node's
/// uid is known.
pub fn build_lease(name: &str, node_uid: Option<&str>, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            // As the kubelet does: the Lease goes away with its Node.
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: uid.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Create a node's Lease, or take over the one a previous run left (owner and holder).
pub async fn ensure_lease(
    client: &kube::Client,
    name: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = build_lease(name, node_uid, Timestamp::now());
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => {
            let patch = json!({
                "metadata": {"ownerReferences": lease.metadata.owner_references},
                "spec": lease.spec,
            });
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// The heartbeat: move the Lease's renewTime to now.
pub async fn renew_lease(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let patch = json!({"spec": {
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": MicroTime(Timestamp::now()),
    }});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_object() {
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().expect("time");
        let v = serde_json::to_value(build_lease("hollow-0", Some("u1"), now)).expect("json");
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(v["spec"]["holderIdentity"], "hollow-0");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "2025-01-02T03:04:05.000000Z");
        let orphan = serde_json::to_value(build_lease("n", None, now)).expect("json");
        assert!(orphan["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn renewed_four_times_per_lease() {
        assert_eq!(
            LEASE_RENEW_EVERY * 4,
            Duration::from_secs(LEASE_DURATION_SECONDS as u64)
        );
    }

    #[test]
    fn healthy_conditions() {
        let since: Timestamp = "2025-01-02T03:00:00Z".parse().expect("time");
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().expect("time");
        let cs = conditions(now, since);
        let types: Vec<_> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        for c in &cs {
            let want = if c.type_ == "Ready" { "True" } else { "False" };
            assert_eq!(c.status, want, "{}", c.type_);
            assert_eq!(c.last_heartbeat_time, Some(Time(now)));
            assert_eq!(c.last_transition_time, Some(Time(since)));
        }
        assert_eq!(cs[3].reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            cs[3].message.as_deref(),
            Some("kubelet is posting ready status")
        );
    }
}
