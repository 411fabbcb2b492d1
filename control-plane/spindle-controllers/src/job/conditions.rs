//! The Job's conditions and how it ends, as kube-controller-manager (1.31+) words them:
//! an ending is first announced by FailureTarget or SuccessCriteriaMet while the
//! remaining pods are stopped, and becomes Failed or Complete once none is left.

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const SUSPENDED: &str = "Suspended";

pub const BACKOFF_LIMIT: (&str, &str) = (
    "BackoffLimitExceeded",
    "Job has reached the specified backoff limit",
);
pub const DEADLINE: (&str, &str) = (
    "DeadlineExceeded",
    "Job was active longer than specified deadline",
);
/// The reason of FailureTarget and Failed when a FailJob rule matched (the message
/// is the rule's, see [`super::policy`]).
pub const POD_FAILURE_POLICY: &str = "PodFailurePolicy";
pub const COMPLETIONS_REACHED: (&str, &str) = (
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);

pub fn find<'a>(s: &'a JobStatus, ty: &str) -> Option<&'a JobCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == ty)
}

pub fn is_true(s: &JobStatus, ty: &str) -> bool {
    find(s, ty).is_some_and(|c| c.status == "True")
}

/// Complete or Failed: nothing more happens to the Job's pods or counts.
pub fn is_finished(s: &JobStatus) -> bool {
    is_true(s, COMPLETE) || is_true(s, FAILED)
}

/// Set condition `ty` (kube's ensureJobConditionStatus): a True one is added or
/// updated; a False one only updates an existing condition. Returns whether it changed.
pub fn ensure(
    s: &mut JobStatus,
    ty: &str,
    status: &str,
    (reason, message): (&str, &str),
    now: Timestamp,
) -> bool {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == ty) {
        if c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    if status != "True" {
        return false;
    }
    conds.push(JobCondition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// Whether the Job has run longer than `activeDeadlineSeconds` since `startTime`, and
/// otherwise how long until it will have.
pub fn deadline(
    job: &Job,
    start: Option<&Time>,
    now: Timestamp,
) -> Option<Result<(), std::time::Duration>> {
    let secs = job.spec.as_ref()?.active_deadline_seconds?;
    let start = start?.0;
    let elapsed = now.duration_since(start).as_secs();
    if elapsed >= secs {
        Some(Ok(()))
    } else {
        Some(Err(std::time::Duration::from_secs((secs - elapsed) as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_false_condition_is_never_added_only_updated() {
        let mut s = JobStatus::default();
        let now = Timestamp::now();
        assert!(!ensure(
            &mut s,
            SUSPENDED,
            "False",
            ("JobResumed", "Job resumed"),
            now
        ));
        assert!(find(&s, SUSPENDED).is_none());
        assert!(ensure(
            &mut s,
            SUSPENDED,
            "True",
            ("JobSuspended", "Job suspended"),
            now
        ));
        assert!(!ensure(
            &mut s,
            SUSPENDED,
            "True",
            ("JobSuspended", "Job suspended"),
            now
        ));
        assert!(ensure(
            &mut s,
            SUSPENDED,
            "False",
            ("JobResumed", "Job resumed"),
            now
        ));
        assert!(!is_true(&s, SUSPENDED));
        assert!(!is_finished(&s));
        assert!(ensure(&mut s, FAILED, "True", BACKOFF_LIMIT, now));
        assert!(is_finished(&s));
    }
}
