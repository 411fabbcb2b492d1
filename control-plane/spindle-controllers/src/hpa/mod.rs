//! The horizontal pod autoscaler (kube-controller-manager's `horizontalpodautoscaling`):
//! every sync period each HPA reads its target's scale subresource, asks the resource
//! metrics API for its pods' usage, and sets the target's replicas to what the metrics
//! propose after stabilization and rate limits, writing kube's status, conditions and
//! events on the way.
//!
//! - [`replicas`]: the replica calculator (pure);
//! - [`behavior`]: stabilization windows and scaling policies (pure);
//! - [`metrics`]: reading metrics.k8s.io;
//! - [`compute`]: one proposal per metric;
//! - [`status`]: the status and its conditions.

mod behavior;
mod compute;
mod metrics;
mod replicas;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client, ResourceExt};
use spindle_meta::events::{object_ref, EventType, Recorder};

use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};
use behavior::{Bounds, History, Normalized};
use status::Status;

/// The name its events carry (kube's `horizontal-pod-autoscaler`).
pub const COMPONENT: &str = "horizontal-pod-autoscaler";
const WORKERS: usize = 5;

/// The controller's flags.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `--horizontal-pod-autoscaler-sync-period` (15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 minutes), for HPAs
    /// without `behavior`.
    pub downscale_stabilization: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}

/// The HPA informer: a new HPA or a changed spec is looked at at once; otherwise each
/// is looked at once per sync period.
pub fn hpas(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<HorizontalPodAutoscaler>> {
    informer(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            if let Change::Upsert { new, old } = ch {
                if old.is_none_or(|o| o.spec != new.spec) {
                    queue.add(key_of(new.as_ref()));
                }
            }
        },
    )
}

struct Ctx {
    client: Client,
    events: Recorder,
    hpas: Arc<Cache<HorizontalPodAutoscaler>>,
    settings: Settings,
    histories: Mutex<HashMap<String, History>>,
    /// Scale targets' resources as discovery named them: looked up once per kind, not
    /// once per HPA and sync.
    resources: Mutex<HashMap<GroupVersionKind, ApiResource>>,
}

pub async fn run(
    client: Client,
    events: Recorder,
    queue: Arc<Queue<String>>,
    hpas: Arc<Cache<HorizontalPodAutoscaler>>,
    settings: Settings,
) -> anyhow::Result<()> {
    hpas.wait_synced().await;
    for hpa in hpas.list() {
        queue.add(key_of(hpa.as_ref()));
    }
    let ctx = Arc::new(Ctx {
        client,
        events,
        hpas,
        settings,
        histories: Mutex::default(),
        resources: Mutex::default(),
    });
    queue
        .run(WORKERS, "horizontalpodautoscaler", move |key| {
            reconcile(ctx.clone(), key)
        })
        .await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    let Some(hpa) = ctx.hpas.get(&key) else {
        ctx.lock().remove(&key);
        return Ok(Action::Done);
    };
    let mut st = Status::from_stored(hpa.status.as_ref());
    let before = st.to_json();
    autoscale(&ctx, &key, &hpa, &mut st).await;
    let after = st.to_json();
    if after != before {
        let (ns, name) = split_key(&key);
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(ctx.client.clone(), ns.unwrap_or_default());
        let mut obj = hpa.as_ref().clone();
        obj.status = serde_json::from_value(after).ok();
        api.replace_status(name, &PostParams::default(), &obj)
            .await?;
    }
    Ok(Action::RequeueAfter(ctx.settings.sync_period))
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.histories.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn warn(&self, hpa: &HorizontalPodAutoscaler, reason: &str, message: &str) {
        let r = object_ref(hpa);
        self.events
            .publish(&r, EventType::Warning, reason, message)
            .await;
    }
}

/// The spec (always there once the API server validated the HPA).
fn spec_of(hpa: &HorizontalPodAutoscaler) -> HorizontalPodAutoscalerSpec {
    hpa.spec.clone().unwrap_or_default()
}

/// The scale subresource of the HPA's target: its API, and the Scale read now.
struct Target {
    api: Api<DynamicObject>,
    name: String,
    scale: Scale,
}

async fn target(ctx: &Ctx, hpa: &HorizontalPodAutoscaler) -> Result<Target, String> {
    let client = &ctx.client;
    let r = spec_of(hpa).scale_target_ref;
    let (group, version) = match r.api_version.as_deref().unwrap_or("").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), r.api_version.clone().unwrap_or_default()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
    let known = ctx.resources.lock().ok().and_then(|m| m.get(&gvk).cloned());
    let ar = match known {
        Some(ar) => ar,
        None => {
            let (ar, _): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| {
                    format!("unable to determine resource for scale target reference: {e}")
                })?;
            if let Ok(mut m) = ctx.resources.lock() {
                m.insert(gvk, ar.clone());
            }
            ar
        }
    };
    let ns = hpa.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let scale = api.get_scale(&r.name).await.map_err(|e| e.to_string())?;
    Ok(Target {
        api,
        name: r.name,
        scale,
    })
}

/// `reconcileAutoscaler`: one look at one HPA, leaving what it found in `st`.
async fn autoscale(ctx: &Ctx, key: &str, hpa: &HorizontalPodAutoscaler, st: &mut Status) {
    let t = match target(ctx, hpa).await {
        Ok(t) => t,
        Err(e) => {
            ctx.warn(hpa, "FailedGetScale", &e).await;
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            st.condition("AbleToScale", false, "FailedGetScale", &msg);
            return;
        }
    };
    st.condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    let current = t.scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let spec = spec_of(hpa);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    st.current_replicas = current;
    let (desired, reason) = if current == 0 && min != 0 {
        let msg = "scaling is disabled since the replica count of the target is zero";
        st.condition("ScalingActive", false, "ScalingDisabled", msg);
        st.desired_replicas = 0;
        return;
    } else if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".to_string(),
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".to_string(),
        )
    } else {
        match from_metrics(ctx, key, hpa, &t, st, Bounds { min, max, current }).await {
            Some(d) => d,
            None => return,
        }
    };
    st.desired_replicas = desired;
    if desired != current {
        rescale(ctx, key, hpa, t, st, current, desired, &reason).await;
    }
}

/// The count the metrics ask for after normalization, and kube's reason for it; None
/// when no metric could be read (the status says why).
async fn from_metrics(
    ctx: &Ctx,
    key: &str,
    hpa: &HorizontalPodAutoscaler,
    t: &Target,
    st: &mut Status,
    b: Bounds,
) -> Option<(i32, String)> {
    let selector = t.scale.status.as_ref().and_then(|s| s.selector.clone());
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        ctx.warn(hpa, "SelectorRequired", "selector is required")
            .await;
        let msg = "the HPA target's scale is missing a selector";
        st.condition("ScalingActive", false, "InvalidSelector", msg);
        return None;
    };
    let ns = hpa.namespace().unwrap_or_default();
    let specs = spec_of(hpa).metrics.unwrap_or_default();
    let now = Utc::now();
    let (mut best, mut name, mut statuses) = (0, String::new(), Vec::new());
    let mut invalid: Vec<compute::Failed> = Vec::new();
    for spec in &specs {
        match compute::compute(&ctx.client, &ns, &selector, b.current, spec, now).await {
            Ok(c) => {
                if best == 0 || c.replicas > best {
                    (best, name) = (c.replicas, c.name);
                }
                statuses.push(c.status);
            }
            Err(f) => {
                ctx.warn(hpa, f.reason, &f.error).await;
                statuses.push(serde_json::json!({"type": ""}));
                invalid.push(f);
            }
        }
    }
    st.metrics = Some(statuses);
    if let Some(first) = invalid.first() {
        if invalid.len() >= specs.len() || best < b.current {
            let msg = format!(
                "the HPA was unable to compute the replica count: {}",
                first.error
            );
            st.condition("ScalingActive", false, first.reason, &msg);
            let err = format!(
                "invalid metrics ({} invalid out of {}), first error is: {}",
                invalid.len(),
                specs.len(),
                first.error
            );
            ctx.warn(hpa, "FailedComputeMetricsReplicas", &err).await;
            return None;
        }
    }
    let msg = format!("the HPA was able to successfully calculate a replica count from {name}");
    st.condition("ScalingActive", true, "ValidMetricFound", &msg);
    let reason = match best.cmp(&b.current) {
        std::cmp::Ordering::Greater => format!("{name} above target"),
        _ => "All metrics below target".to_string(),
    };
    let n = normalize(ctx, key, hpa, b, best);
    st.condition("AbleToScale", true, n.able.0, n.able.1);
    let (limited, (why, msg)) = n.limited;
    st.condition("ScalingLimited", limited, why, msg);
    Some((n.replicas, reason))
}

fn normalize(
    ctx: &Ctx,
    key: &str,
    hpa: &HorizontalPodAutoscaler,
    b: Bounds,
    proposed: i32,
) -> Normalized {
    let now = Utc::now();
    let mut histories = ctx.lock();
    let h = histories.entry(key.to_string()).or_default();
    match &spec_of(hpa).behavior {
        Some(behavior) => {
            let mut behavior = behavior.clone();
            // kube leaves a scale-down window unset for the controller's flag to fill.
            if let Some(down) = behavior.scale_down.as_mut() {
                let flag = ctx.settings.downscale_stabilization.as_secs();
                let flag = i32::try_from(flag).unwrap_or(i32::MAX);
                down.stabilization_window_seconds.get_or_insert(flag);
            }
            h.normalize_with(b, proposed, &behavior, now)
        }
        None => {
            let window = chrono::Duration::from_std(ctx.settings.downscale_stabilization)
                .unwrap_or_else(|_| chrono::Duration::minutes(5));
            h.normalize(b, proposed, window, now)
        }
    }
}

/// Write the new replica count through the scale subresource, with kube's events and
/// conditions.
#[allow(clippy::too_many_arguments)]
async fn rescale(
    ctx: &Ctx,
    key: &str,
    hpa: &HorizontalPodAutoscaler,
    t: Target,
    st: &mut Status,
    current: i32,
    desired: i32,
    reason: &str,
) {
    let mut scale = t.scale;
    scale.spec.get_or_insert_with(Default::default).replicas = Some(desired);
    let r = object_ref(hpa);
    match t
        .api
        .replace_scale(&t.name, &PostParams::default(), &scale)
        .await
    {
        Ok(_) => {
            let msg =
                format!("the HPA controller was able to update the target scale to {desired}");
            st.condition("AbleToScale", true, "SucceededRescale", &msg);
            let msg = format!("New size: {desired}; reason: {reason}");
            ctx.events
                .publish(&r, EventType::Normal, "SuccessfulRescale", &msg)
                .await;
            st.scaled_now();
            let longest = behavior::longest_period(spec_of(hpa).behavior.as_ref());
            ctx.lock().entry(key.to_string()).or_default().scaled(
                current,
                desired,
                longest,
                Utc::now(),
            );
        }
        Err(e) => {
            let msg = format!("the HPA controller was unable to update the target scale: {e}");
            st.condition("AbleToScale", false, "FailedUpdateScale", &msg);
            let msg = format!("New size: {desired}; reason: {reason}; error: {e}");
            ctx.warn(hpa, "FailedRescale", &msg).await;
            // The count stays what it was; the next sync tries again.
            st.desired_replicas = current;
        }
    }
}
