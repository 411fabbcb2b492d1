//! `computeReplicasForMetrics`: each metric of an HPA proposes a replica count and a
//! status; the largest proposal wins. Resource and ContainerResource metrics come from
//! the resource metrics API; Pods, Object and External metrics need a custom or external
//! metrics API, which Spindle does not serve, so they are invalid as in a Kubernetes
//! cluster without an adapter.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling::v2::{MetricSpec, MetricTarget};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{json, Value};
use spindle_meta::Quantity;

use super::metrics::resource_samples;
use super::replicas::{resource_replicas, PodState, Target};

/// One metric's answer.
pub struct Computed {
    pub replicas: i32,
    /// How kube names the metric in reasons ("cpu resource utilization (percentage of
    /// request)").
    pub name: String,
    pub status: Value,
}

/// One metric's failure: the error, and the condition reason it sets.
pub struct Failed {
    pub reason: &'static str,
    pub error: String,
}

/// A resource metric, from either a Resource or a ContainerResource source.
struct ResourceMetric<'a> {
    name: &'a str,
    container: Option<&'a str>,
    target: &'a MetricTarget,
}

pub async fn compute(
    client: &Client,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
    now: DateTime<Utc>,
) -> Result<Computed, Failed> {
    let (m, reason) = match (
        spec.type_.as_str(),
        &spec.resource,
        &spec.container_resource,
    ) {
        ("Resource", Some(r), _) => {
            let m = ResourceMetric {
                name: &r.name,
                container: None,
                target: &r.target,
            };
            (m, "FailedGetResourceMetric")
        }
        ("ContainerResource", _, Some(r)) => {
            let m = ResourceMetric {
                name: &r.name,
                container: Some(&r.container),
                target: &r.target,
            };
            (m, "FailedGetContainerResourceMetric")
        }
        (other, _, _) => return Err(unserved(other, spec)),
    };
    resource(client, ns, selector, current, &m, now)
        .await
        .map_err(|error| Failed { reason, error })
}

/// kube's words for a metric no adapter serves.
fn unserved(type_: &str, spec: &MetricSpec) -> Failed {
    let (reason, api, name) = match type_ {
        "Pods" => (
            "FailedGetPodsMetric",
            "custom",
            spec.pods.as_ref().map(|p| p.metric.name.clone()),
        ),
        "Object" => (
            "FailedGetObjectMetric",
            "custom",
            spec.object.as_ref().map(|o| o.metric.name.clone()),
        ),
        "External" => (
            "FailedGetExternalMetric",
            "external",
            spec.external.as_ref().map(|e| e.metric.name.clone()),
        ),
        _ => {
            return Failed {
                reason: "InvalidMetricSourceType",
                error: format!("unknown metric source type {type_:?}"),
            }
        }
    };
    Failed {
        reason,
        error: format!(
            "unable to get metric {}: unable to fetch metrics from {api} metrics API: no {api} metrics API ({api}.metrics.k8s.io) is registered",
            name.unwrap_or_default()
        ),
    }
}

async fn resource(
    client: &Client,
    ns: &str,
    selector: &str,
    current: i32,
    m: &ResourceMetric<'_>,
    now: DateTime<Utc>,
) -> Result<Computed, String> {
    let res = m.name;
    let (target, what) = match (&m.target.average_value, m.target.average_utilization) {
        (Some(v), _) => {
            let milli = Quantity::try_from(v).map(|q| q.as_millis()).unwrap_or(0);
            (Target::AverageMilli(milli.max(1)), "usage")
        }
        (None, Some(u)) => (Target::Utilization(u.max(1)), "utilization"),
        (None, None) => {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into())
        }
    };
    let wrap = |e: String| format!("failed to get {res} {what}: {e}");
    let samples = resource_samples(client, ns, selector, res, m.container)
        .await
        .map_err(|e| wrap(format!("unable to get metrics for resource {res}: {e}")))?;
    let pods = pod_states(client, ns, selector, res, m.container)
        .await
        .map_err(wrap)?;
    let p = resource_replicas(current, target, res == "cpu", &pods, samples, now).map_err(wrap)?;
    let average = Quantity::from_millis(p.average_milli).to_string();
    let kind_word = if m.container.is_some() {
        "container resource"
    } else {
        "resource"
    };
    let (name, current) = match p.utilization {
        Some(u) => (
            format!("{res} {kind_word} utilization (percentage of request)"),
            json!({"averageValue": average, "averageUtilization": u}),
        ),
        None => (
            format!("{res} {kind_word}"),
            json!({"averageValue": average}),
        ),
    };
    let status = match m.container {
        None => json!({"type": "Resource", "resource": {"name": res, "current": current}}),
        Some(c) => json!({"type": "ContainerResource",
            "containerResource": {"name": res, "container": c, "current": current}}),
    };
    Ok(Computed {
        replicas: p.replicas,
        name,
        status,
    })
}

/// The target's pods as the calculator needs them.
async fn pod_states(
    client: &Client,
    ns: &str,
    selector: &str,
    res: &str,
    container: Option<&str>,
) -> Result<Vec<PodState>, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("unable to get pods while calculating replica count: {e}"))?;
    Ok(pods
        .items
        .iter()
        .map(|p| pod_state(p, res, container))
        .collect())
}

fn pod_state(p: &Pod, res: &str, container: Option<&str>) -> PodState {
    let name = p.metadata.name.clone().unwrap_or_default();
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            let since = c.last_transition_time.as_ref().map(|t| t.0);
            (
                c.status == "True",
                since.and_then(to_chrono).unwrap_or_default(),
            )
        });
    PodState {
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status
            .and_then(|s| s.start_time.as_ref())
            .and_then(|t| to_chrono(t.0)),
        request: request(p, &name, res, container),
        name,
    }
}

fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().try_into().ok()?)
}

/// `calculatePodRequests`: the sum of the containers' requests in milli-units.
fn request(p: &Pod, name: &str, res: &str, container: Option<&str>) -> Result<i64, String> {
    let mut sum = 0i64;
    let containers = p.spec.iter().flat_map(|s| s.containers.iter());
    for c in containers.filter(|c| container.is_none_or(|want| c.name == want)) {
        let q = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r: &BTreeMap<_, _>| r.get(res))
            .and_then(|q| Quantity::try_from(q).ok());
        match q {
            Some(q) => sum = sum.saturating_add(q.as_millis()),
            None => {
                return Err(format!(
                    "missing request for {res} in container {} of Pod {name}",
                    c.name
                ))
            }
        }
    }
    Ok(sum)
}
