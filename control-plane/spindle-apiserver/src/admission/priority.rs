//! Priority (kube-apiserver's `plugin/pkg/admission/priority`): a new pod's
//! `priorityClassName`, or the cluster's default class, becomes its `spec.priority` and
//! `spec.preemptionPolicy`; and only one PriorityClass may be the global default.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Admission, Attributes, Operation};
use crate::authz::attributes::forbidden_error;
use crate::rest::{decode_stored, key};
use crate::status::ApiResult;
use crate::AppState;

const GROUP: &str = "scheduling.k8s.io";
const PREEMPT_LOWER: &str = "PreemptLowerPriority";

pub struct Priority;

async fn priority_classes(st: &AppState) -> ApiResult<Vec<Value>> {
    let Some(kind) = st.reg.by_resource(GROUP, "v1", "priorityclasses") else {
        return Ok(Vec::new());
    };
    let (kvs, _) = st.store.list(&key(kind, None, None)).await?;
    kvs.iter().map(decode_stored).collect()
}

fn name_of(pc: &Value) -> &str {
    pc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// `getDefaultPriorityClass`: of the classes marked default, the lowest value.
fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|pc| is_default(pc))
        .min_by_key(|pc| pc.get("value").and_then(Value::as_i64).unwrap_or(0))
}

impl Priority {
    async fn admit_pod(&self, st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        // Set once on create: an update keeps what the pod was given.
        if let Some(old) = a.old {
            for f in ["priority", "preemptionPolicy"] {
                if let Some(v) = old.pointer(&format!("/spec/{f}")).filter(|v| !v.is_null()) {
                    spec.insert(f.into(), v.clone());
                }
            }
            return Ok(());
        }
        let refuse = |msg: String| forbidden_error("", a.kind.plural, a.name, &msg);
        let classes = priority_classes(st).await?;
        let wanted = spec
            .get("priorityClassName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let (name, priority, policy) = match &wanted {
            Some(n) => {
                let Some(pc) = classes.iter().find(|pc| name_of(pc) == n) else {
                    return Err(refuse(format!("no PriorityClass with name {n} was found")));
                };
                (
                    Some(n.clone()),
                    pc["value"].as_i64().unwrap_or(0),
                    policy_of(pc),
                )
            }
            None => match default_class(&classes) {
                Some(pc) => (
                    Some(name_of(pc).to_string()),
                    pc["value"].as_i64().unwrap_or(0),
                    policy_of(pc),
                ),
                None => (None, 0, PREEMPT_LOWER.to_string()),
            },
        };
        if let Some(given) = spec.get("priority").filter(|v| !v.is_null()) {
            if given.as_i64() != Some(priority) {
                return Err(refuse(format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name")));
            }
        }
        if let Some(given) = spec.get("preemptionPolicy").filter(|v| !v.is_null()) {
            if given.as_str() != Some(policy.as_str()) {
                let given = given
                    .as_str()
                    .map_or_else(|| given.to_string(), str::to_string);
                return Err(refuse(format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
            }
        }
        if let Some(n) = name {
            spec.insert("priorityClassName".into(), json!(n));
        }
        spec.insert("priority".into(), json!(priority));
        spec.insert("preemptionPolicy".into(), json!(policy));
        Ok(())
    }
}

fn policy_of(pc: &Value) -> String {
    pc.get("preemptionPolicy")
        .and_then(Value::as_str)
        .unwrap_or(PREEMPT_LOWER)
        .to_string()
}

#[async_trait]
impl Admission for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn handles(&self, _op: Operation) -> bool {
        true
    }

    async fn admit(&self, st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        if a.is_resource("", "pods") && a.subresource.is_none() {
            return self.admit_pod(st, a, obj).await;
        }
        Ok(())
    }

    /// `validatePriorityClass`: a second global default is refused.
    async fn validate(&self, st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        if !a.is_resource(GROUP, "priorityclasses") || !is_default(obj) {
            return Ok(());
        }
        let classes = priority_classes(st).await?;
        let other = classes
            .iter()
            .find(|pc| is_default(pc) && name_of(pc) != a.name);
        match other {
            Some(pc) => Err(forbidden_error(
                GROUP,
                "priorityclasses",
                a.name,
                &format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    name_of(pc)
                ),
            )),
            None => Ok(()),
        }
    }
}
