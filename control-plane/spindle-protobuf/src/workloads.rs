//! `apps/v1`, `batch/v1` and `policy/v1` kinds. Status messages are
//! server-owned and never converted.

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::policy::v1 as policy;

use crate::json::{Obj, Res, ToJson};

impl ToJson for apps::Deployment {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for apps::DeploymentSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("replicas", self.replicas)
            .msg("selector", &self.selector)?
            .msg("template", &self.template)?
            .msg("strategy", &self.strategy)?
            .num_nz("minReadySeconds", self.min_ready_seconds)
            .num("revisionHistoryLimit", self.revision_history_limit)
            .flag_nz("paused", self.paused)
            .num("progressDeadlineSeconds", self.progress_deadline_seconds);
        Ok(o.finish())
    }
}

impl ToJson for apps::DeploymentStrategy {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("type", &self.r#type)
            .msg("rollingUpdate", &self.rolling_update)?;
        Ok(o.finish())
    }
}

impl ToJson for apps::RollingUpdateDeployment {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.int_or_str("maxUnavailable", &self.max_unavailable)
            .int_or_str("maxSurge", &self.max_surge);
        Ok(o.finish())
    }
}

impl ToJson for batch::Job {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::JobTemplateSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::JobSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("parallelism", self.parallelism)
            .num("completions", self.completions)
            .num("activeDeadlineSeconds", self.active_deadline_seconds)
            .msg("podFailurePolicy", &self.pod_failure_policy)?
            .msg("successPolicy", &self.success_policy)?
            .num("backoffLimit", self.backoff_limit)
            .num("backoffLimitPerIndex", self.backoff_limit_per_index)
            .num("maxFailedIndexes", self.max_failed_indexes)
            .msg("selector", &self.selector)?
            .flag("manualSelector", self.manual_selector)
            .msg("template", &self.template)?
            .num("ttlSecondsAfterFinished", self.ttl_seconds_after_finished)
            .str_req("completionMode", &self.completion_mode)
            .flag("suspend", self.suspend)
            .str_req("podReplacementPolicy", &self.pod_replacement_policy)
            .str_req("managedBy", &self.managed_by);
        Ok(o.finish())
    }
}

impl ToJson for batch::PodFailurePolicy {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.set("rules", serde_json::Value::Array(Vec::new()))
            .msgs("rules", &self.rules)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::PodFailurePolicyRule {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("action", &self.action)
            .msg("onExitCodes", &self.on_exit_codes)?
            .msgs("onPodConditions", &self.on_pod_conditions)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::PodFailurePolicyOnExitCodesRequirement {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("containerName", &self.container_name)
            .str_req("operator", &self.operator)
            .nums("values", &self.values);
        Ok(o.finish())
    }
}

impl ToJson for batch::PodFailurePolicyOnPodConditionsPattern {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type).str("status", &self.status);
        Ok(o.finish())
    }
}

impl ToJson for batch::SuccessPolicy {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.set("rules", serde_json::Value::Array(Vec::new()))
            .msgs("rules", &self.rules)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::SuccessPolicyRule {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("succeededIndexes", &self.succeeded_indexes)
            .num("succeededCount", self.succeeded_count);
        Ok(o.finish())
    }
}

impl ToJson for batch::CronJob {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for batch::CronJobSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("schedule", &self.schedule)
            .str_req("timeZone", &self.time_zone)
            .num("startingDeadlineSeconds", self.starting_deadline_seconds)
            .str("concurrencyPolicy", &self.concurrency_policy)
            .flag("suspend", self.suspend)
            .msg("jobTemplate", &self.job_template)?
            .num(
                "successfulJobsHistoryLimit",
                self.successful_jobs_history_limit,
            )
            .num("failedJobsHistoryLimit", self.failed_jobs_history_limit);
        Ok(o.finish())
    }
}

impl ToJson for policy::Eviction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msg("deleteOptions", &self.delete_options)?;
        Ok(o.finish())
    }
}

impl ToJson for policy::PodDisruptionBudget {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for policy::PodDisruptionBudgetSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.int_or_str("minAvailable", &self.min_available)
            .msg("selector", &self.selector)?
            .int_or_str("maxUnavailable", &self.max_unavailable)
            .str_req(
                "unhealthyPodEvictionPolicy",
                &self.unhealthy_pod_eviction_policy,
            );
        Ok(o.finish())
    }
}
