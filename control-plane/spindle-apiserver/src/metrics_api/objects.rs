//! NodeMetrics and PodMetrics as metrics-server writes them, from a node's Summary: CPU
//! as nanocores (`usageNanoCores`), memory as the working set, `timestamp` the sample's
//! time and `window` the agents' sampling window. An object is left out while any of its
//! numbers is missing (a container sampled only once has no CPU rate yet).

use serde_json::{json, Map, Value};
use spindle_meta::quantity::Format;
use spindle_meta::resource_metrics::WINDOW;
use spindle_meta::Quantity;

use crate::rest::now_rfc3339;

/// `{cpu, memory}` of a Summary's `cpu` and `memory` stats, and the sample's time.
fn usage(stats: &Value) -> Option<(Value, Value)> {
    let nanocores = i64::try_from(stats["cpu"]["usageNanoCores"].as_u64()?).ok()?;
    let bytes = i64::try_from(stats["memory"]["workingSetBytes"].as_u64()?).ok()?;
    let usage = json!({
        "cpu": Quantity::from_nanos(nanocores).to_string(),
        "memory": Quantity::from_value(bytes, Format::BinarySI).to_string(),
    });
    Some((usage, stats["cpu"]["time"].clone()))
}

/// metrics-server's metadata: the object's name (and namespace), the time of the
/// answer, the object's labels.
fn metadata(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut out = Map::new();
    out.insert("name".into(), m["name"].clone());
    if let Some(ns) = m.get("namespace") {
        out.insert("namespace".into(), ns.clone());
    }
    out.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if let Some(labels) = m.get("labels").filter(|l| l.is_object()) {
        out.insert("labels".into(), labels.clone());
    }
    Value::Object(out)
}

/// The window as a Go duration ("5s").
fn window() -> String {
    format!("{}s", WINDOW.as_secs_f64())
}

pub fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let (usage, time) = usage(&summary["node"])?;
    Some(json!({"metadata": metadata(node), "timestamp": time, "window": window(), "usage": usage}))
}

pub fn pod_metrics(pod: &Value, stats: &Value) -> Option<Value> {
    let mut time = Value::Null;
    let containers = stats["containers"]
        .as_array()?
        .iter()
        .map(|c| {
            let (usage, t) = usage(c)?;
            time = t;
            Some(json!({"name": c["name"], "usage": usage}))
        })
        .collect::<Option<Vec<Value>>>()?;
    if containers.is_empty() {
        return None;
    }
    Some(
        json!({"metadata": metadata(pod), "timestamp": time, "window": window(), "containers": containers}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(cpu: Option<u64>, mem: u64) -> Value {
        let mut s = json!({"cpu": {"time": "2026-01-01T00:00:00Z", "usageCoreNanoSeconds": 5},
            "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": mem}});
        if let Some(c) = cpu {
            s["cpu"]["usageNanoCores"] = json!(c);
        }
        s
    }

    #[test]
    fn pod_metrics_have_metrics_servers_shape() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}}});
        let mut c = stats(Some(199_878_512), 50 << 20);
        c["name"] = json!("main");
        let m = pod_metrics(&pod, &json!({"containers": [c]})).unwrap();
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metadata", "timestamp", "window", "containers"]);
        assert_eq!(m["metadata"]["labels"]["app"], "a");
        assert_eq!(m["metadata"]["namespace"], "ns");
        assert!(m["metadata"].get("uid").is_none());
        assert_eq!(m["window"], "5s");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(
            m["containers"][0],
            json!({"name": "main", "usage": {"cpu": "199878512n", "memory": "50Mi"}})
        );
    }

    #[test]
    fn a_container_without_a_rate_leaves_its_pod_out() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let mut a = stats(Some(1), 1);
        a["name"] = json!("a");
        let mut b = stats(None, 1);
        b["name"] = json!("b");
        assert!(pod_metrics(&pod, &json!({"containers": [a, b]})).is_none());
        assert!(pod_metrics(&pod, &json!({"containers": []})).is_none());
    }

    #[test]
    fn node_metrics_use_the_working_set() {
        let node = json!({"metadata": {"name": "n1"}});
        let m = node_metrics(&node, &json!({"node": stats(Some(1_000_000_000), 2048)})).unwrap();
        assert_eq!(m["usage"], json!({"cpu": "1", "memory": "2Ki"}));
        assert!(m["metadata"].get("namespace").is_none());
    }
}
