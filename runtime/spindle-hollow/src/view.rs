//! The parts of a Pod a hollow kubelet reads. One process plays every node, so it reads
//! every bound pod twice (bound, then reported Running) plus each status write's reply;
//! parsing whole Pods, managedFields and container statuses included, was a third of its
//! CPU. serde skips the members not named here without building them.

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer};

/// The annotations a hollow pod is steered by (`crate::finish`).
const HOLLOW_PREFIX: &str = "hollow.spindle.dev/";

/// A Pod with only identity, the containers' names and images, the node, and the status
/// phase, address and conditions filled in.
#[derive(Clone, Debug)]
pub struct PodView(pub Pod);

impl<'de> Deserialize<'de> for PodView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Parts {
            #[serde(deserialize_with = "meta")]
            metadata: ObjectMeta,
            #[serde(default, deserialize_with = "spec")]
            spec: Option<PodSpec>,
            #[serde(default, deserialize_with = "status")]
            status: Option<PodStatus>,
        }
        let p = Parts::deserialize(d)?;
        Ok(PodView(Pod {
            metadata: p.metadata,
            spec: p.spec,
            status: p.status,
        }))
    }
}

impl k8s_openapi::Resource for PodView {
    const API_VERSION: &'static str = Pod::API_VERSION;
    const GROUP: &'static str = Pod::GROUP;
    const KIND: &'static str = Pod::KIND;
    const VERSION: &'static str = Pod::VERSION;
    const URL_PATH_SEGMENT: &'static str = Pod::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for PodView {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct M {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        deletion_timestamp: Option<Time>,
        annotations: Option<std::collections::BTreeMap<String, String>>,
    }
    let m = M::deserialize(d)?;
    // Only the hollow kubelet's own annotations (kubectl's last-applied copy is big).
    let annotations = m.annotations.map(|a| {
        a.into_iter()
            .filter(|(k, _)| k.starts_with(HOLLOW_PREFIX))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        annotations: annotations.filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    })
}

#[derive(Deserialize)]
struct ContainerView {
    name: String,
    image: Option<String>,
}

fn containers(v: Vec<ContainerView>) -> Vec<Container> {
    v.into_iter()
        .map(|c| Container {
            name: c.name,
            image: c.image,
            ..Container::default()
        })
        .collect()
}

fn spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PodSpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct S {
        node_name: Option<String>,
        #[serde(default)]
        containers: Vec<ContainerView>,
        init_containers: Option<Vec<ContainerView>>,
        restart_policy: Option<String>,
    }
    Ok(Option::<S>::deserialize(d)?.map(|s| PodSpec {
        node_name: s.node_name,
        containers: containers(s.containers),
        init_containers: s.init_containers.map(containers),
        restart_policy: s.restart_policy,
        ..PodSpec::default()
    }))
}

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PodStatus>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct S {
        phase: Option<String>,
        #[serde(rename = "podIP")]
        pod_ip: Option<String>,
        conditions: Option<Vec<PodCondition>>,
        start_time: Option<Time>,
    }
    Ok(Option::<S>::deserialize(d)?.map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        conditions: s.conditions,
        start_time: s.start_time,
        ..PodStatus::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_hollow_kubelet_uses_and_drops_the_rest() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                         "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"hollow.spindle.dev/run-for": "1s", "other": "x"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "restartPolicy": "Always",
                     "containers": [{"name": "c", "image": "i:1", "args": ["x"]}],
                     "initContainers": [{"name": "init", "image": "i:0"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.2",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                                              "image": "i:1", "imageID": ""}]}
        });
        let v: PodView = serde_json::from_value(json).expect("pod view");
        let pod = v.0;
        assert_eq!(pod.metadata.uid.as_deref(), Some("u1"));
        assert!(pod.metadata.deletion_timestamp.is_some());
        assert!(pod.metadata.managed_fields.is_none());
        let kept = pod.metadata.annotations.expect("hollow annotations");
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept["hollow.spindle.dev/run-for"], "1s");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.containers[0].image.as_deref(), Some("i:1"));
        assert!(spec.containers[0].args.is_none());
        assert_eq!(spec.init_containers.map(|c| c.len()), Some(1));
        let status = pod.status.expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert!(status.container_statuses.is_none());
    }
}
