//! The resource metrics API (metrics.k8s.io/v1beta1 PodMetrics) as the HPA reads it:
//! one usage sample per pod, summed over its containers or of one container, with kube's
//! error wording.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use spindle_meta::Quantity;

use super::replicas::Sample;

fn pod_metrics() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// The samples of `resource` of the pods `selector` picks in `ns`, by pod name
/// (`GetResourceMetric`); `container` narrows each pod to that container.
pub async fn resource_samples(
    client: &Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, Sample>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_metrics());
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            format!(
                "unable to fetch metrics from resource metrics API: {}",
                api_error(&e)
            )
        })?;
    if list.items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = BTreeMap::new();
    for item in &list.items {
        let Some(name) = item.metadata.name.clone() else {
            continue;
        };
        if let Some(s) = sample(&item.data, resource, container) {
            out.insert(name, s);
        }
    }
    Ok(out)
}

/// An error as client-go words a failed list: the server's message and the request.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} (get pods.metrics.k8s.io)", s.message),
        other => other.to_string(),
    }
}

/// One PodMetrics' sample; none when a container (or the one asked for) lacks the
/// resource, as kube's metrics client skips such pods.
fn sample(data: &Value, resource: &str, container: Option<&str>) -> Option<Sample> {
    let containers = data.get("containers")?.as_array()?;
    let mut milli = 0i64;
    let mut found = false;
    for c in containers {
        if container.is_some_and(|want| c.get("name").and_then(Value::as_str) != Some(want)) {
            continue;
        }
        let usage = c.pointer(&format!("/usage/{resource}"))?.as_str()?;
        milli = milli.saturating_add(Quantity::parse(usage).ok()?.as_millis());
        found = true;
    }
    if !found {
        return None;
    }
    let timestamp = data
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    let window = data
        .get("window")
        .and_then(Value::as_str)
        .and_then(|w| spindle_meta::names::parse_duration(w).ok())
        .and_then(|w| Duration::from_std(w).ok())
        .unwrap_or_else(Duration::zero);
    Some(Sample {
        milli,
        timestamp,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_sample_sums_its_containers_or_takes_the_one_named() {
        let data = json!({"timestamp": "2026-12-08T00:00:00Z", "window": "15.5s",
            "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "50Mi"}},
                {"name": "side", "usage": {"cpu": "1", "memory": "1Ki"}}]});
        let s = sample(&data, "cpu", None).expect("sample");
        assert_eq!((s.milli, s.window), (1250, Duration::milliseconds(15500)));
        let s = sample(&data, "memory", Some("side")).expect("sample");
        assert_eq!(s.milli, 1024 * 1000);
        assert!(sample(&data, "memory", Some("other")).is_none());
        assert!(sample(&data, "gpu", None).is_none());
    }
}
