//! `autoscaling/v1` and `autoscaling/v2` HorizontalPodAutoscalers (what `kubectl
//! autoscale` sends). Status is server-owned and never converted.

use k8s_pb::api::autoscaling::v1;
use k8s_pb::api::autoscaling::v2;

use crate::json::{Obj, Res, ToJson};

/// What both versions share: the object (metadata and spec) and the target reference.
macro_rules! shared {
    ($($v:ident),*) => {$(
        impl ToJson for $v::HorizontalPodAutoscaler {
            fn to_json(&self) -> Res {
                let mut o = Obj::new();
                o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
                Ok(o.finish())
            }
        }

        impl ToJson for $v::CrossVersionObjectReference {
            fn to_json(&self) -> Res {
                let mut o = Obj::new();
                o.str_req("kind", &self.kind)
                    .str_req("name", &self.name)
                    .str("apiVersion", &self.api_version);
                Ok(o.finish())
            }
        }
    )*};
}

shared!(v1, v2);

impl ToJson for v1::HorizontalPodAutoscalerSpec {
    // maxReplicas is a plain int32 in Go (always written).
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("scaleTargetRef", &self.scale_target_ref)?
            .num("minReplicas", self.min_replicas)
            .num("maxReplicas", Some(self.max_replicas.unwrap_or(0)))
            .num(
                "targetCPUUtilizationPercentage",
                self.target_cpu_utilization_percentage,
            );
        Ok(o.finish())
    }
}

impl ToJson for v2::HorizontalPodAutoscalerSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("scaleTargetRef", &self.scale_target_ref)?
            .num("minReplicas", self.min_replicas)
            .num("maxReplicas", Some(self.max_replicas.unwrap_or(0)))
            .msgs("metrics", &self.metrics)?
            .msg("behavior", &self.behavior)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::MetricSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .msg("object", &self.object)?
            .msg("pods", &self.pods)?
            .msg("resource", &self.resource)?
            .msg("containerResource", &self.container_resource)?
            .msg("external", &self.external)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::MetricTarget {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .qty("value", &self.value)
            .qty("averageValue", &self.average_value)
            .num("averageUtilization", self.average_utilization);
        Ok(o.finish())
    }
}

impl ToJson for v2::MetricIdentifier {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .msg("selector", &self.selector)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::ResourceMetricSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name).msg("target", &self.target)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::ContainerResourceMetricSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .msg("target", &self.target)?
            .str_req("container", &self.container);
        Ok(o.finish())
    }
}

impl ToJson for v2::PodsMetricSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metric", &self.metric)?.msg("target", &self.target)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::ObjectMetricSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("describedObject", &self.described_object)?
            .msg("target", &self.target)?
            .msg("metric", &self.metric)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::ExternalMetricSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metric", &self.metric)?.msg("target", &self.target)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::HorizontalPodAutoscalerBehavior {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("scaleUp", &self.scale_up)?
            .msg("scaleDown", &self.scale_down)?;
        Ok(o.finish())
    }
}

impl ToJson for v2::HpaScalingRules {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num(
            "stabilizationWindowSeconds",
            self.stabilization_window_seconds,
        )
        .str("selectPolicy", &self.select_policy)
        .msgs("policies", &self.policies)?
        .qty("tolerance", &self.tolerance);
        Ok(o.finish())
    }
}

impl ToJson for v2::HpaScalingPolicy {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .num("value", Some(self.value.unwrap_or(0)))
            .num("periodSeconds", Some(self.period_seconds.unwrap_or(0)));
        Ok(o.finish())
    }
}
