//! DefaultTolerationSeconds: a new pod tolerates a not-ready or unreachable node for a
//! while (the server's `--default-not-ready-toleration-seconds`) before taint-based
//! eviction moves it.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Admission, Attributes, Operation};
use crate::status::ApiResult;
use crate::AppState;

pub struct DefaultTolerationSeconds;

#[async_trait]
impl Admission for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn admit(&self, st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        if a.is_resource("", "pods") && a.subresource.is_none() {
            add_tolerations(obj, st.default_toleration_seconds);
        }
        Ok(())
    }
}

fn add_tolerations(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tols.is_null() {
        *tols = json!([]);
    }
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists_all =
                tkey.is_empty() && t.get("operator").and_then(Value::as_str) == Some("Exists");
            (tkey == key || exists_all) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}
