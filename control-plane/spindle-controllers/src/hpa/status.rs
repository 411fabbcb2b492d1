//! The status an HPA reconcile writes: kube's conditions (AbleToScale, ScalingActive,
//! ScalingLimited) with their transition times, current metrics, and replica counts, in
//! kube's field order.

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
use serde_json::{json, Value};

/// What a reconcile ends with, applied over the stored status.
pub struct Status {
    conditions: Vec<Value>,
    last_scale_time: Option<Value>,
    pub current_replicas: i32,
    pub desired_replicas: i32,
    pub metrics: Option<Vec<Value>>,
}

impl Status {
    pub fn from_stored(s: Option<&HorizontalPodAutoscalerStatus>) -> Status {
        let conditions = s
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        Status {
            conditions,
            last_scale_time: s
                .and_then(|s| s.last_scale_time.as_ref())
                .and_then(|t| serde_json::to_value(t).ok()),
            current_replicas: s.and_then(|s| s.current_replicas).unwrap_or(0),
            desired_replicas: s.map(|s| s.desired_replicas).unwrap_or(0),
            metrics: s.and_then(|s| s.current_metrics.as_ref()).map(|m| {
                m.iter()
                    .filter_map(|m| serde_json::to_value(m).ok())
                    .collect()
            }),
        }
    }

    /// `setCondition`: a condition keeps its place and its transition time unless its
    /// status changes.
    pub fn condition(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" };
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let existing = self
            .conditions
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(type_));
        let since = match &existing {
            Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {
                c.get("lastTransitionTime").cloned().unwrap_or(json!(now))
            }
            _ => json!(now),
        };
        let new = json!({"type": type_, "status": status, "lastTransitionTime": since,
            "reason": reason, "message": message});
        match existing {
            Some(c) => *c = new,
            None => self.conditions.push(new),
        }
    }

    pub fn scaled_now(&mut self) {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        self.last_scale_time = Some(json!(now));
    }

    /// The status as kube's `HorizontalPodAutoscalerStatus` serializes (lastScaleTime,
    /// currentReplicas, desiredReplicas, currentMetrics, conditions).
    pub fn to_json(&self) -> Value {
        let mut s = serde_json::Map::new();
        if let Some(t) = &self.last_scale_time {
            s.insert("lastScaleTime".into(), t.clone());
        }
        if self.current_replicas != 0 {
            s.insert("currentReplicas".into(), json!(self.current_replicas));
        }
        s.insert("desiredReplicas".into(), json!(self.desired_replicas));
        s.insert("currentMetrics".into(), json!(self.metrics));
        if !self.conditions.is_empty() {
            s.insert("conditions".into(), json!(self.conditions));
        }
        Value::Object(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut s = Status::from_stored(None);
        s.condition("AbleToScale", true, "SucceededGetScale", "first");
        let t = s.conditions[0]["lastTransitionTime"].clone();
        s.conditions[0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        s.condition("ScalingActive", false, "FailedGetResourceMetric", "x");
        s.condition("AbleToScale", true, "ReadyForNewScale", "second");
        assert_eq!(
            s.conditions[0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(s.conditions[0]["reason"], "ReadyForNewScale");
        assert_eq!(s.conditions[1]["type"], "ScalingActive");
        s.condition("AbleToScale", false, "FailedGetScale", "third");
        assert_ne!(
            s.conditions[0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert!(t.is_string());
        let json = s.to_json();
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["desiredReplicas", "currentMetrics", "conditions"]);
    }
}
