//! HorizontalPodAutoscalers (autoscaling/v2): kube's defaults, and a status only the
//! controller writes.

use serde_json::{json, Map, Value};

use super::{reset_status, Strategy};
use crate::validation::{validate_hpa, validate_hpa_update, FieldError};

pub struct HorizontalPodAutoscalers;

/// The CPU utilization an HPA without metrics aims at (`DefaultCPUUtilization`).
pub const DEFAULT_CPU_UTILIZATION: i64 = 80;

impl Strategy for HorizontalPodAutoscalers {
    /// `SetDefaults_HorizontalPodAutoscaler` (autoscaling/v2).
    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if spec.get("minReplicas").is_none_or(Value::is_null) {
            spec.insert("minReplicas".into(), json!(1));
        }
        if spec
            .get("metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target":
                    {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]),
            );
        }
        if let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
            for (dir, defaults) in [
                ("scaleUp", scale_up_rules()),
                ("scaleDown", scale_down_rules()),
            ] {
                let rules = b.entry(dir).or_insert_with(|| json!({}));
                if rules.is_null() {
                    *rules = json!({});
                }
                if let (Some(r), Value::Object(d)) = (rules.as_object_mut(), defaults) {
                    fill_missing(r, d);
                }
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_hpa(obj, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_hpa_update(old, new, errs);
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        reset_status(obj, json!({"currentMetrics": null, "desiredReplicas": 0}));
    }
}

/// `GenerateHPAScaleUpRules`' defaults: no stabilization, the larger of 4 pods or 100 %
/// per 15 s.
pub fn scale_up_rules() -> Value {
    json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// `GenerateHPAScaleDownRules`' defaults: five minutes of stabilization, then anything
/// down to the minimum.
pub fn scale_down_rules() -> Value {
    json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// Each of kube's rule fields the user left out comes from the defaults.
fn fill_missing(rules: &mut Map<String, Value>, defaults: Map<String, Value>) {
    for (k, v) in defaults {
        if rules.get(&k).is_none_or(Value::is_null) {
            rules.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        HorizontalPodAutoscalers.validate(obj, &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    #[test]
    fn an_hpa_without_metrics_aims_at_80_percent_cpu_and_behavior_is_filled_in() {
        let mut hpa = json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "web"}, "maxReplicas": 5,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}});
        HorizontalPodAutoscalers.default(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"],
            json!({"type": "Utilization", "averageUtilization": 80})
        );
        let b = &hpa["spec"]["behavior"];
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 10);
        assert_eq!(b["scaleDown"]["policies"], scale_down_rules()["policies"]);
        assert_eq!(b["scaleUp"], scale_up_rules());
        assert_eq!(errors(&hpa), Vec::<String>::new());
    }

    #[test]
    fn hpas_are_refused_in_kubes_words() {
        // A metric whose type names another source than the one filled in: kube asks
        // for that source, and forbids the others only when two or more are filled in.
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment"},
            "minReplicas": 3, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 0}}},
                {"type": "Pods", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "-1"}}}],
            "behavior": {"scaleUp": {"policies": [], "selectPolicy": "Most"}}}});
        assert_eq!(
            errors(&hpa),
            [
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
                "spec.scaleTargetRef.name: Required value",
                "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
                "spec.metrics[1].resource.target.averageValue: Invalid value: \"-1\": must be positive",
                "spec.metrics[1].pods: Required value: must populate information for the given metric source",
                "spec.behavior.scaleUp.selectPolicy: Unsupported value: \"Most\": supported values: \"Disabled\", \"Max\", \"Min\"",
                "spec.behavior.scaleUp.policies: Required value: must specify at least one Policy",
            ]
        );
    }
}
