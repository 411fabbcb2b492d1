//! The endpoints controllers: for every Service with a selector, the Endpoints object of the
//! same name and one EndpointSlice (label `kubernetes.io/service-name`, owned by the
//! Service) list the selected pods that have an IP, split into ready and not ready by the
//! pod's Ready condition, with each port's targetPort resolved against the pod's
//! container ports. Kube-proxy's job (the agent) and DNS read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::replicaset::is_ready;
use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};

const MANAGER: &str = "endpoint-controller";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Index services by namespace, so a pod change finds its candidates cheaply.
pub fn service_index(s: &Service) -> Vec<String> {
    vec![format!("ns/{}", s.namespace().unwrap_or_default())]
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    spindle_meta::selector::map_selects(sel, pod.metadata.labels.as_ref())
}

/// Enqueue the Services that select a changed pod (before or after the change).
pub fn on_pod_change(q: &Queue<String>, services: &Cache<Service>, ch: &Change<'_, Pod>) {
    for p in ch.states() {
        let ns = p.namespace().unwrap_or_default();
        for svc in services.by_index(&format!("ns/{ns}")) {
            if selects(&svc, p) {
                q.add(key_of(svc.as_ref()));
            }
        }
    }
}

/// A Service port's targetPort for one pod: a number, or a named container port.
fn target_port(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }),
    }
}

/// The hostname an endpoint carries, so that the cluster DNS answers
/// `<hostname>.<svc>.<ns>.svc.<domain>`: the pod's `spec.hostname` when its
/// `spec.subdomain` names this Service (as StatefulSet pods' do), as kube's endpoint
/// controllers decide it.
fn dns_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace;
    same.then(|| host.to_string())
}

/// (name, target port, protocol) of one Service port for one pod.
type ResolvedPort = (String, i32, String);

/// The slice name: stable per Service, so re-syncs update rather than multiply.
fn slice_name(svc: &Service) -> String {
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let suffix: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    format!("{}-{suffix}", svc.name_any())
}

/// The clients the two controllers write with: Kubernetes' endpoint controller and
/// endpointslice controller are two identities, though here one reconcile does both.
#[derive(Clone)]
pub struct Writers {
    pub endpoints: Client,
    pub slices: Client,
}

async fn reconcile(
    clients: Writers,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    key: String,
) -> Result<Action, kube::Error> {
    let (ns, name) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let eps: Api<Endpoints> = Api::namespaced(clients.endpoints, ns);
    let Some(svc) = services.get(&key) else {
        // The Service is gone: its Endpoints go too (slices follow their owner).
        match eps.delete(name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
        return Ok(Action::Done);
    };
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Action::Done);
    };
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        // Without a selector the user manages the endpoints.
        return Ok(Action::Done);
    }
    let ports = spec.ports.clone().unwrap_or_default();
    let mut selected: Vec<Arc<Pod>> = pods
        .by_index(&format!("ns/{ns}"))
        .into_iter()
        .filter(|p| selects(&svc, p))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .collect();
    selected.sort_by_key(|p| p.name_any());

    // Endpoints: one subset per distinct resolved port list.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut slice_endpoints = Vec::new();
    let mut slice_ports: Option<Vec<Value>> = None;
    for p in &selected {
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let resolved: Vec<ResolvedPort> = ports
            .iter()
            .filter_map(|sp| {
                target_port(sp, p).map(|tp| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        tp,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        let ready = is_ready(p) && p.metadata.deletion_timestamp.is_none();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let target = json!({
            "kind": "Pod", "namespace": ns, "name": p.name_any(), "uid": p.metadata.uid,
        });
        let hostname = dns_hostname(&svc, p);
        let mut addr = json!({"ip": ip, "nodeName": node, "targetRef": target});
        if let Some(h) = &hostname {
            addr["hostname"] = json!(h);
        }
        let entry = subsets.entry(resolved.clone()).or_default();
        if ready {
            entry.0.push(addr);
        } else {
            entry.1.push(addr);
        }
        let mut endpoint = json!({
            "addresses": [ip],
            "conditions": {
                "ready": ready,
                "serving": is_ready(p),
                "terminating": p.metadata.deletion_timestamp.is_some(),
            },
            "nodeName": node,
            "targetRef": target,
        });
        if let Some(h) = hostname {
            endpoint["hostname"] = json!(h);
        }
        slice_endpoints.push(endpoint);
        if slice_ports.is_none() {
            slice_ports = Some(
                resolved
                    .iter()
                    .map(|(n, port, proto)| json!({"name": n, "port": port, "protocol": proto}))
                    .collect(),
            );
        }
    }
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let mut s = json!({
                "ports": ports.iter().map(|(n, port, proto)| json!({"name": n, "port": port, "protocol": proto})).collect::<Vec<_>>(),
            });
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    let pp = PatchParams::apply(MANAGER).force();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": subsets,
    });
    eps.patch(name, &pp, &Patch::Apply(&endpoints)).await?;

    let owner = svc.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    let mut slice_labels = labels;
    slice_labels.insert(SERVICE_NAME_LABEL.into(), name.to_string());
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "endpointslice-controller.k8s.io".into(),
    );
    let sname = slice_name(&svc);
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": sname, "namespace": ns, "labels": slice_labels, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "addressType": "IPv4",
        "endpoints": slice_endpoints,
        "ports": slice_ports.unwrap_or_default(),
    });
    let slices: Api<EndpointSlice> = Api::namespaced(clients.slices, ns);
    slices.patch(&sname, &pp, &Patch::Apply(&slice)).await?;
    Ok(Action::Done)
}

/// Run the controller; `queue` is the one the shared pod informer feeds through
/// [`on_pod_change`].
pub async fn run(
    clients: Writers,
    queue: Arc<Queue<String>>,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    services.wait_synced().await;
    pods.wait_synced().await;
    for s in services.list() {
        queue.add(key_of(s.as_ref()));
    }
    queue
        .run(4, "endpoints", move |key| {
            reconcile(clients.clone(), services.clone(), pods.clone(), key)
        })
        .await;
    Ok(())
}

/// The Service informer, enqueueing every Service change.
pub fn services(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<Service>> {
    informer(
        Api::<Service>::all(client.clone()),
        watch_config(),
        Some(Box::new(service_index)),
        move |ch| match ch {
            Change::Upsert { new, .. } => queue.add(key_of(new.as_ref())),
            Change::Delete(o) => queue.add(key_of(o.as_ref())),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_in_the_services_subdomain_gets_its_hostname() {
        let svc = Service {
            metadata: meta("nginx"),
            ..Default::default()
        };
        let pod = |hostname: Option<&str>, subdomain: Option<&str>| Pod {
            metadata: meta("web-0"),
            spec: Some(PodSpec {
                hostname: hostname.map(Into::into),
                subdomain: subdomain.map(Into::into),
                ..Default::default()
            }),
            status: None,
        };
        let named = pod(Some("web-0"), Some("nginx"));
        assert_eq!(dns_hostname(&svc, &named).as_deref(), Some("web-0"));
        assert_eq!(dns_hostname(&svc, &pod(Some("web-0"), Some("other"))), None);
        assert_eq!(dns_hostname(&svc, &pod(None, Some("nginx"))), None);
        let mut elsewhere = named.clone();
        elsewhere.metadata.namespace = Some("other".into());
        assert_eq!(dns_hostname(&svc, &elsewhere), None);
    }
}
