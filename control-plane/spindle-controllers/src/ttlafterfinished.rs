//! The TTL-after-finished controller: deletes a finished Job (condition Complete or Failed
//! True) whose `spec.ttlSecondsAfterFinished` has run out since it finished, as
//! kube-controller-manager's does.
//!
//! A Job is looked at when it changes and again exactly when its TTL is due (a delayed
//! requeue, not a poll), so a TTL changed before expiry is followed: a shorter one by
//! the update's reconcile, a longer one by the early wake-up finding time still left.
//! Before deleting, the Job is read afresh from the API server and checked again (the
//! cache may hold a stale TTL), and the delete carries that Job's uid as a precondition
//! (a new Job of the same name is never removed in its place). Deletion is Foreground,
//! as Kubernetes does it: the Job stays, marked, until the garbage collector has
//! removed its pods.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};

/// Concurrent reconciles (kube-controller-manager's --concurrent-ttl-after-finished-syncs).
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    /// Finished by its conditions, but the condition carries no time to count from.
    #[error("unable to find the time when the Job {0} finished")]
    NoFinishTime(String),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Where a Job stands against its TTL at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No TTL, not finished, or already being deleted: nothing to do.
    NotDue,
    /// Time left before the TTL runs out.
    In(Duration),
    /// The TTL has run out (at or before now).
    Expired,
}

/// Whether the Job has finished: a Complete or Failed condition with status True.
pub fn is_finished(job: &Job) -> bool {
    finish_condition_time(job).is_some()
}

/// The finishing condition's transition time: `Some(None)` when it has none.
fn finish_condition_time(job: &Job) -> Option<Option<Timestamp>> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the controller cares about the Job at all: it has a TTL and has finished.
pub fn needs_cleanup(job: &Job) -> bool {
    ttl_of(job).is_some() && is_finished(job)
}

fn ttl_of(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.ttl_seconds_after_finished
}

/// The Job's standing against its TTL at `now`: expiry is the finishing condition's
/// transition time plus `ttlSecondsAfterFinished` seconds.
pub fn expiry(job: &Job, now: Timestamp) -> Result<Expiry, TtlError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Expiry::NotDue);
    }
    let (Some(ttl), Some(finished)) = (ttl_of(job), finish_condition_time(job)) else {
        return Ok(Expiry::NotDue);
    };
    let finished = finished.ok_or_else(|| TtlError::NoFinishTime(key_of(job)))?;
    if finished > now {
        // Clock skew between whoever wrote the condition and us: counting from the
        // future defers the cleanup, as Kubernetes does, rather than deleting early.
        tracing::info!(job = %key_of(job), "Job finished in the future (clock skew?); cleanup deferred");
    }
    let left = finished.duration_since(now) + SignedDuration::from_secs(i64::from(ttl));
    if !left.is_positive() {
        return Ok(Expiry::Expired);
    }
    // Rounded up to whole milliseconds, so the wake-up is never a hair early.
    let ms = left
        .as_millis()
        .saturating_add(i128::from(left.subsec_nanos() % 1_000_000 != 0));
    Ok(Expiry::In(Duration::from_millis(
        u64::try_from(ms).unwrap_or(u64::MAX),
    )))
}

/// The Job informer: a Job that has finished with a TTL is queued on every change.
pub fn jobs(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<Job>> {
    informer(
        Api::<Job>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            if let Change::Upsert { new, .. } = ch {
                if new.metadata.deletion_timestamp.is_none() && needs_cleanup(new) {
                    queue.add(key_of(new.as_ref()));
                }
            }
        },
    )
}

struct Ctx {
    client: Client,
    jobs: Arc<Cache<Job>>,
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, TtlError> {
    let Some(cached) = ctx.jobs.get(&key) else {
        return Ok(Action::Done);
    };
    match expiry(&cached, Timestamp::now())? {
        Expiry::NotDue => return Ok(Action::Done),
        Expiry::In(left) => return Ok(Action::RequeueAfter(left)),
        Expiry::Expired => {}
    }
    // The cache may be behind a TTL just changed: decide on the Job as it is now.
    let (ns, name) = split_key(&key);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns.unwrap_or("default"));
    let Some(fresh) = api.get_opt(name).await? else {
        return Ok(Action::Done);
    };
    match expiry(&fresh, Timestamp::now())? {
        Expiry::NotDue => return Ok(Action::Done),
        Expiry::In(left) => return Ok(Action::RequeueAfter(left)),
        Expiry::Expired => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    tracing::info!(job = %key, "cleaning up finished Job past its ttlSecondsAfterFinished");
    match api.delete(&fresh.name_any(), &dp).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
        Err(e) => Err(e.into()),
    }
}

/// Run the controller: every cached Job is looked at once after the first list, then on
/// its changes and at its expiry.
pub async fn run(
    client: Client,
    queue: Arc<Queue<String>>,
    jobs: Arc<Cache<Job>>,
) -> anyhow::Result<()> {
    jobs.wait_synced().await;
    for j in jobs.list() {
        if needs_cleanup(&j) {
            queue.add(key_of(j.as_ref()));
        }
    }
    let ctx = Arc::new(Ctx { client, jobs });
    queue
        .run(WORKERS, "ttl-after-finished", move |key| {
            reconcile(ctx.clone(), key)
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ttl: Option<i32>, conds: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "u-1"},
            "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
            "status": {"conditions": conds}
        }))
        .expect("a valid Job")
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn complete_at(t: &str) -> serde_json::Value {
        json!([{"type": "Complete", "status": "True", "lastTransitionTime": t}])
    }

    #[test]
    fn expiry_counts_from_the_finishing_condition() {
        let j = job(Some(100), complete_at("2026-01-01T00:00:00Z"));
        let e = |now| expiry(&j, at(now)).expect("computable");
        assert_eq!(
            e("2026-01-01T00:00:00Z"),
            Expiry::In(Duration::from_secs(100))
        );
        assert_eq!(
            e("2026-01-01T00:01:30Z"),
            Expiry::In(Duration::from_secs(10))
        );
        assert_eq!(
            e("2026-01-01T00:01:39.9995Z"),
            Expiry::In(Duration::from_millis(1)),
            "rounded up, never early"
        );
        assert_eq!(e("2026-01-01T00:01:40Z"), Expiry::Expired);
        assert_eq!(e("2026-01-02T00:00:00Z"), Expiry::Expired);
    }

    #[test]
    fn a_failed_job_expires_too_and_ttl_zero_at_once() {
        let failed = json!([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let j = job(Some(0), failed);
        assert_eq!(
            expiry(&j, at("2026-01-01T00:00:00Z")).expect("computable"),
            Expiry::Expired
        );
    }

    #[test]
    fn a_changed_ttl_moves_the_expiry() {
        let mut j = job(Some(600), complete_at("2026-01-01T00:00:00Z"));
        let now = at("2026-01-01T00:00:10Z");
        assert_eq!(
            expiry(&j, now).ok(),
            Some(Expiry::In(Duration::from_secs(590)))
        );
        j.spec.as_mut().expect("spec").ttl_seconds_after_finished = Some(5);
        assert_eq!(expiry(&j, now).ok(), Some(Expiry::Expired));
        j.spec.as_mut().expect("spec").ttl_seconds_after_finished = Some(30);
        assert_eq!(
            expiry(&j, now).ok(),
            Some(Expiry::In(Duration::from_secs(20)))
        );
    }

    #[test]
    fn not_due_without_ttl_unfinished_or_being_deleted() {
        let now = at("2026-06-01T00:00:00Z");
        let no_ttl = job(None, complete_at("2026-01-01T00:00:00Z"));
        assert_eq!(expiry(&no_ttl, now).ok(), Some(Expiry::NotDue));
        assert!(!needs_cleanup(&no_ttl));
        let running = job(
            Some(1),
            json!([{"type": "Complete", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                   {"type": "Suspended", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
        );
        assert_eq!(expiry(&running, now).ok(), Some(Expiry::NotDue));
        assert!(!needs_cleanup(&running));
        let mut deleting = job(Some(1), complete_at("2026-01-01T00:00:00Z"));
        assert!(needs_cleanup(&deleting));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(expiry(&deleting, now).ok(), Some(Expiry::NotDue));
    }

    #[test]
    fn finished_without_a_time_is_an_error_and_the_future_defers() {
        let j = job(Some(1), json!([{"type": "Complete", "status": "True"}]));
        assert!(matches!(
            expiry(&j, at("2026-01-01T00:00:00Z")),
            Err(TtlError::NoFinishTime(k)) if k == "default/j"
        ));
        // Finished "in the future" (skew): the TTL counts from that time.
        let j = job(Some(10), complete_at("2026-01-01T00:01:00Z"));
        assert_eq!(
            expiry(&j, at("2026-01-01T00:00:00Z")).ok(),
            Some(Expiry::In(Duration::from_secs(70)))
        );
    }

    #[test]
    fn a_huge_ttl_does_not_overflow() {
        let j = job(Some(i32::MAX), complete_at("2026-01-01T00:00:00Z"));
        assert_eq!(
            expiry(&j, at("2026-01-01T00:00:00Z")).ok(),
            Some(Expiry::In(Duration::from_secs(i32::MAX as u64)))
        );
    }
}
