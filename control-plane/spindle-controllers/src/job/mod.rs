//! The Job controller (batch/v1), as kube-controller-manager's: it runs a Job's pods up
//! to `parallelism` until `completions` succeed (or, Indexed, until every index has),
//! counts each finished pod exactly once through the tracking finalizer
//! ([`tracking`]), backs off before replacing failed pods ([`backoff`]), and ends the
//! Job Complete or Failed ([`conditions`]). Deleting a Job leaves its pods to the
//! garbage collector; the controller only lets go of their finalizers.

pub mod backoff;
pub mod conditions;
pub mod indexes;
mod per_index;
mod pods;
pub mod policy;
mod state;
mod success;
mod sync;
pub mod tracking;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};

use crate::controller_ref::controller_ref;
use crate::runtime::{informer, key_of, watch_config, Cache, Change, Queue};
use spindle_meta::events::Recorder;

/// The component its events are reported by, as Kubernetes names it.
pub const COMPONENT: &str = "job-controller";
/// Concurrent reconciles (distinct Jobs).
const WORKERS: usize = 4;

/// The informer of Jobs, each change queued under its key.
pub fn jobs(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<Job>> {
    informer(
        Api::<Job>::all(client.clone()),
        watch_config(),
        None,
        move |ch| match ch {
            Change::Upsert { new, .. } => queue.add(key_of(new.as_ref())),
            Change::Delete(o) => queue.add(key_of(o.as_ref())),
        },
    )
}

/// Queue the Job that controls a changed pod (before and after the change).
pub fn on_pod_change(q: &Queue<String>, ch: &Change<'_, Pod>) {
    for p in ch.states() {
        if let Some(r) = controller_ref(&p.metadata).filter(|r| is_job(r)) {
            q.add(format!("{}/{}", p.namespace().unwrap_or_default(), r.name));
        }
    }
}

fn is_job(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    r.kind == "Job" && r.api_version.starts_with("batch/")
}

/// Run the controller over the shared pod cache; `queue` is the one [`jobs`] and
/// [`on_pod_change`] feed.
pub async fn run(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    jobs: Arc<Cache<Job>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    jobs.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(sync::Ctx::new(client, recorder, jobs, pods));
    queue
        .run(WORKERS, "job", move |key: String| {
            let ctx = ctx.clone();
            async move { sync::reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}
