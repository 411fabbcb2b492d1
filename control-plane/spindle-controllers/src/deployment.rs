//! Deployment controller: rolls a Deployment's pod template out through ReplicaSets
//! named `<deployment>-<pod-template-hash>`, with Kubernetes' semantics for rolling
//! updates, Recreate, proportional scaling, pause/resume, revisions (what `kubectl
//! rollout history|undo` read) and the status `kubectl rollout status` and `kubectl wait`
//! judge.
//!
//! It runs on the crate's informer/queue runtime rather than kube-runtime's `Controller`
//! so a reconcile always sees a ReplicaSet cache that already contains the change that
//! woke it. Writes carry the resourceVersion they were computed from: a decision made on
//! a stale cache fails with 409 and is retried with back-off instead of being applied.

#[path = "deployment_util.rs"]
pub(crate) mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::selector::{self, Matcher};

use crate::controller_ref::{controller_ref, owner_reference, RefManager};
use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};
use util::*;

/// Concurrent reconciles (distinct Deployments).
const WORKERS: usize = 4;
/// How often an unfinished rollout is looked at even without events, so the
/// progress deadline and minReadySeconds boundaries are noticed.
const IN_PROGRESS_RESYNC: Duration = Duration::from_secs(5);
/// Resync of a Deployment whose rollout exceeded its deadline.
const TIMED_OUT_RESYNC: Duration = Duration::from_secs(60);
/// Recreate waits for old pods to vanish; no pod watch here, so poll.
const RECREATE_POLL: Duration = Duration::from_secs(1);

struct Ctx {
    client: Client,
    deploys: Arc<Cache<Deployment>>,
    rss: Arc<Cache<ReplicaSet>>,
    /// The controllers' shared pod cache, indexed by controlling owner.
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
}

fn ns_index(ns: &str) -> String {
    format!("ns:{ns}")
}

fn rs_spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        })
        .unwrap_or((0, 0, 0))
}

fn created_secs(m: &ObjectMeta) -> i64 {
    m.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

fn view(rs: &ReplicaSet) -> RsView {
    RsView {
        name: rs.name_any(),
        created: created_secs(&rs.metadata),
        spec: rs_spec_replicas(rs),
        available: rs_status(rs).2,
        max_replicas: rs
            .annotations()
            .get(MAX_REPLICAS)
            .and_then(|v| v.parse().ok()),
    }
}

fn is_conflict_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

pub async fn run(client: Client, recorder: Recorder, pods: Arc<Cache<Pod>>) -> anyhow::Result<()> {
    let queue: Arc<Queue<String>> = Queue::new();
    let q = queue.clone();
    let deploys = informer(
        Api::<Deployment>::all(client.clone()),
        watch_config(),
        None,
        move |ch| match ch {
            Change::Upsert { new, .. } => q.add(key_of(new.as_ref())),
            Change::Delete(o) => q.add(key_of(o.as_ref())),
        },
    );
    let q = queue.clone();
    let dcache = deploys.clone();
    let rss = informer(
        Api::<ReplicaSet>::all(client.clone()),
        watch_config(),
        Some(Box::new(|rs: &ReplicaSet| {
            vec![ns_index(&rs.namespace().unwrap_or_default())]
        })),
        move |ch| {
            let (new, old) = match ch {
                Change::Upsert { new, old } => (new.clone(), old.cloned()),
                Change::Delete(o) => (o.clone(), None),
            };
            for rs in [Some(new), old].into_iter().flatten() {
                let ns = rs.namespace().unwrap_or_default();
                match controller_ref(&rs.metadata) {
                    Some(r) if r.kind == "Deployment" => q.add(format!("{ns}/{}", r.name)),
                    Some(_) => {}
                    // An orphan wakes every Deployment that could adopt it.
                    None => {
                        for d in dcache.list() {
                            let matches = d.namespace().as_deref() == Some(ns.as_str())
                                && d.spec.as_ref().is_some_and(|s| {
                                    Matcher::for_controller(Some(&s.selector)).matches(rs.labels())
                                });
                            if matches {
                                q.add(key_of(d.as_ref()));
                            }
                        }
                    }
                }
            }
        },
    );
    deploys.wait_synced().await;
    rss.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        deploys,
        rss,
        pods,
        recorder,
    });
    queue
        .run(WORKERS, "deployment", move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let Some(d) = ctx.deploys.get(key) else {
        return Ok(Action::Done);
    };
    let mut s = Sync::new(ctx, (*d).clone())?;
    s.run().await
}

/// One pass over one Deployment. `d.status` accumulates the changes of the pass and is
/// written once at the end if it differs from what the server has.
struct Sync<'a> {
    ctx: &'a Ctx,
    d: Deployment,
    spec: DeploymentSpec,
    orig_status: DeploymentStatus,
    p: Params,
    ns: String,
    dref: ObjectReference,
}

impl<'a> Sync<'a> {
    fn new(ctx: &'a Ctx, mut d: Deployment) -> anyhow::Result<Self> {
        let spec = d
            .spec
            .clone()
            .ok_or_else(|| anyhow!("deployment {} has no spec", d.name_any()))?;
        let p =
            Params::from_spec(&spec).map_err(|e| anyhow!("deployment {}: {e}", d.name_any()))?;
        let orig_status = d.status.clone().unwrap_or_default();
        d.status = Some(orig_status.clone());
        let ns = d.namespace().unwrap_or_else(|| "default".into());
        let dref = object_ref(&d);
        Ok(Sync {
            ctx,
            d,
            spec,
            orig_status,
            p,
            ns,
            dref,
        })
    }

    fn status(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    fn generation(&self) -> i64 {
        self.d.metadata.generation.unwrap_or(0)
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    fn event(&self, ty: EventType, reason: &'static str, msg: String) {
        let rec = self.ctx.recorder.clone();
        let r = self.dref.clone();
        tokio::spawn(async move { rec.publish(&r, ty, reason, &msg).await });
    }

    async fn run(&mut self) -> anyhow::Result<Action> {
        if self.d.metadata.deletion_timestamp.is_some() {
            // Dependents go with the garbage collector; only keep the status honest.
            let rss = self.claim().await?;
            let (new, olds) = self.split(rss);
            self.sync_status(&olds, new.as_ref());
            self.write_status().await?;
            return Ok(Action::Done);
        }
        if selector::is_empty(&self.spec.selector) {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            if self.orig_status.observed_generation.unwrap_or(0) < self.generation() {
                let g = self.generation();
                self.status().observed_generation = Some(g);
                self.write_status().await?;
            }
            return Ok(Action::Done);
        }
        let rss = self.claim().await?;
        self.check_paused_condition();
        let (new, olds) = self.split(rss);
        let new = self.sync_new_rs(new, &olds, false).await?;
        if self.spec.paused == Some(true) || self.is_scaling_event(new.as_ref(), &olds) {
            return self.sync_scale(new, olds).await;
        }
        if self.p.rolling {
            self.rollout_rolling(new, olds).await
        } else {
            self.rollout_recreate(new, olds).await
        }
    }

    // -----------------------------------------------------------------------
    // ownership

    /// The ReplicaSets this Deployment controls: those it owns and still selects, plus
    /// matching orphans it adopts. Owned sets it no longer selects are released.
    async fn claim(&mut self) -> anyhow::Result<Vec<ReplicaSet>> {
        let selector = Matcher::for_controller(Some(&self.spec.selector));
        let claimed = RefManager::new(&self.ctx.client, &self.d)
            .claim(
                self.ctx.rss.by_index(&ns_index(&self.ns)),
                |rs: &ReplicaSet| selector.matches(rs.labels()),
            )
            .await
            .context("claiming replica sets")?;
        Ok(claimed.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// The current ReplicaSet (the oldest whose template equals the Deployment's, hash
    /// label aside) and the others, oldest first.
    fn split(&self, mut rss: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        rss.sort_by(|a, b| {
            created_secs(&a.metadata)
                .cmp(&created_secs(&b.metadata))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        let pos = rss.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &self.spec.template))
        });
        let new = pos.map(|i| rss.remove(i));
        (new, rss)
    }

    // -----------------------------------------------------------------------
    // the new ReplicaSet and revisions

    async fn replace_rs(&self, rs: &ReplicaSet) -> anyhow::Result<ReplicaSet> {
        Ok(self
            .rs_api()
            .replace(&rs.name_any(), &PostParams::default(), rs)
            .await?)
    }

    /// Bring an existing current ReplicaSet's annotations (revision, change-cause) and
    /// minReadySeconds up to date, or create it when `create` and it does not exist.
    async fn sync_new_rs(
        &mut self,
        new: Option<ReplicaSet>,
        olds: &[ReplicaSet],
        create: bool,
    ) -> anyhow::Result<Option<ReplicaSet>> {
        let new_revision = olds
            .iter()
            .map(|rs| revision_of(rs.metadata.annotations.as_ref()))
            .max()
            .unwrap_or(0)
            + 1;
        let d_ann = self.d.annotations().clone();
        if let Some(mut rs) = new {
            let mut ann = rs.annotations().clone();
            let changed = set_new_rs_annotations(&mut ann, &d_ann, new_revision, false, &self.p);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let mrs_changed =
                spec.min_ready_seconds.unwrap_or(0) != self.spec.min_ready_seconds.unwrap_or(0);
            if changed || mrs_changed {
                spec.min_ready_seconds = self.spec.min_ready_seconds;
                rs.metadata.annotations = Some(ann);
                rs = self.replace_rs(&rs).await?;
            }
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(&rev).await?;
            if has_progress_deadline(&self.spec)
                && get_condition(self.status(), PROGRESSING).is_none()
            {
                let c = new_condition(
                    PROGRESSING,
                    "True",
                    FOUND_NEW_RS,
                    format!("Found new replica set {:?}", rs.name_any()),
                );
                set_condition(self.status(), c);
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        self.create_new_rs(olds, new_revision, &d_ann)
            .await
            .map(Some)
    }

    async fn create_new_rs(
        &mut self,
        olds: &[ReplicaSet],
        new_revision: i64,
        d_ann: &BTreeMap<String, String>,
    ) -> anyhow::Result<ReplicaSet> {
        let hash = pod_template_hash(&self.spec.template, self.orig_status.collision_count);
        let mut template = self.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let replicas = if self.p.rolling {
            let total = sum_counts(olds.iter().map(rs_spec_replicas));
            rolling_new_size(&self.p, total, 0)
        } else {
            self.p.replicas
        };
        let mut ann = BTreeMap::new();
        set_new_rs_annotations(&mut ann, d_ann, new_revision, true, &self.p);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(ann),
                owner_references: Some(vec![owner_reference(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: self.spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut already_existed = false;
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(c) => {
                if replicas > 0 {
                    self.event(
                        EventType::Normal,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {replicas}"),
                    );
                }
                c
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (the cache had not caught up) or a genuine hash collision.
                let existing = self.rs_api().get(&name).await?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &self.spec.template));
                if !(ours && same) {
                    let st = self.status();
                    // The count is in the status, which a client may write: saturate.
                    st.collision_count = Some(st.collision_count.unwrap_or(0).saturating_add(1));
                    self.write_status().await?;
                    return Err(anyhow!(
                        "hash collision for replica set {name}; collisionCount bumped"
                    ));
                }
                already_existed = true;
                existing
            }
            Err(e) => {
                if has_progress_deadline(&self.spec) {
                    let c = new_condition(
                        PROGRESSING,
                        "False",
                        "ReplicaSetCreateError",
                        format!("Failed to create new replica set {name:?}: {e}"),
                    );
                    set_condition(self.status(), c);
                    self.write_status().await?;
                }
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!("Failed to create new replica set {name:?}: {e}"),
                );
                return Err(e.into());
            }
        };
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if !already_existed && has_progress_deadline(&self.spec) {
            let c = new_condition(
                PROGRESSING,
                "True",
                NEW_RS_CREATED,
                format!("Created new replica set {name:?}"),
            );
            set_condition(self.status(), c);
        }
        Ok(created)
    }

    /// The revision annotation lives in metadata, which the status subresource does not
    /// write, so it takes an update of the Deployment itself (no generation bump).
    async fn set_deployment_revision(&mut self, rev: &str) -> anyhow::Result<()> {
        if rev.is_empty() || self.d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let mut body = self.d.clone();
        body.status = None;
        body.annotations_mut().insert(REVISION.into(), rev.into());
        let updated = self
            .d_api()
            .replace(&self.d.name_any(), &PostParams::default(), &body)
            .await?;
        self.d.metadata = updated.metadata;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // scaling

    /// Set a ReplicaSet's size (and its replica annotations); records the event
    /// Kubernetes records. Returns whether the size changed.
    async fn scale_rs(&self, rs: &mut ReplicaSet, size: i32) -> anyhow::Result<bool> {
        let cur = rs_spec_replicas(rs);
        let mut ann = rs.annotations().clone();
        let ann_changed = set_replicas_annotations(&mut ann, &self.p);
        if cur == size && !ann_changed {
            return Ok(false);
        }
        let mut body = rs.clone();
        body.spec.get_or_insert_with(Default::default).replicas = Some(size);
        body.metadata.annotations = Some(ann);
        *rs = self.replace_rs(&body).await?;
        if cur != size {
            let dir = if size > cur { "up" } else { "down" };
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {dir} replica set {} from {cur} to {size}",
                    rs.name_any()
                ),
            );
        }
        Ok(cur != size)
    }

    /// `replicas` changed under a ReplicaSet that was sized for another value.
    fn is_scaling_event(&self, new: Option<&ReplicaSet>, olds: &[ReplicaSet]) -> bool {
        olds.iter()
            .chain(new)
            .filter(|rs| rs_spec_replicas(rs) > 0)
            .any(|rs| {
                rs.annotations()
                    .get(DESIRED_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .is_some_and(|d| d != self.p.replicas)
            })
    }

    /// Apply a change of `replicas` without moving the rollout: the single active set
    /// takes it all; several active sets share it proportionally.
    async fn scale(
        &mut self,
        new: &mut Option<ReplicaSet>,
        olds: &mut [ReplicaSet],
    ) -> anyhow::Result<()> {
        let active = olds
            .iter()
            .chain(new.iter())
            .filter(|rs| rs_spec_replicas(rs) > 0)
            .count();
        if active <= 1 {
            // The only active one, else the newest.
            let target = match new
                .as_mut()
                .filter(|rs| active == 0 || rs_spec_replicas(rs) > 0)
            {
                Some(rs) => Some(rs),
                None if active == 1 => olds.iter_mut().find(|rs| rs_spec_replicas(rs) > 0),
                None => olds.iter_mut().max_by_key(|rs| created_secs(&rs.metadata)),
            };
            if let Some(rs) = target {
                if rs_spec_replicas(rs) != self.p.replicas {
                    self.scale_rs(rs, self.p.replicas).await?;
                }
            }
            return Ok(());
        }
        let saturated = new.as_ref().is_some_and(|rs| {
            rs_spec_replicas(rs) == self.p.replicas
                && rs
                    .annotations()
                    .get(DESIRED_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    == Some(self.p.replicas)
                && rs_status(rs).2 == self.p.replicas
        });
        if saturated {
            for rs in olds.iter_mut().filter(|rs| rs_spec_replicas(rs) > 0) {
                self.scale_rs(rs, 0).await?;
            }
            return Ok(());
        }
        if !self.p.rolling {
            return Ok(());
        }
        let mut sets: Vec<&mut ReplicaSet> = olds
            .iter_mut()
            .chain(new.iter_mut())
            .filter(|rs| rs_spec_replicas(rs) > 0)
            .collect();
        let views: Vec<RsView> = sets.iter().map(|rs| view(rs)).collect();
        let sizes = proportional_sizes(&self.p, &views, self.orig_status.replicas.unwrap_or(0));
        for (rs, size) in sets.iter_mut().zip(sizes) {
            self.scale_rs(rs, size).await?;
        }
        Ok(())
    }

    /// Paused, or `replicas` changed: scale, never roll.
    async fn sync_scale(
        &mut self,
        mut new: Option<ReplicaSet>,
        mut olds: Vec<ReplicaSet>,
    ) -> anyhow::Result<Action> {
        self.scale(&mut new, &mut olds).await?;
        if self.spec.paused == Some(true) {
            self.cleanup(&olds).await?;
        }
        self.sync_status(&olds, new.as_ref());
        self.write_status().await?;
        Ok(self.next_action())
    }

    // -----------------------------------------------------------------------
    // strategies

    async fn rollout_rolling(
        &mut self,
        new: Option<ReplicaSet>,
        mut olds: Vec<ReplicaSet>,
    ) -> anyhow::Result<Action> {
        let mut new = match new {
            Some(n) => n,
            None => match self.sync_new_rs(None, &olds, true).await? {
                Some(n) => n,
                None => return Err(anyhow!("no new replica set")),
            },
        };
        let total = sum_counts(olds.iter().chain([&new]).map(rs_spec_replicas));
        let target = rolling_new_size(&self.p, total, rs_spec_replicas(&new));
        if self.scale_rs(&mut new, target).await? {
            return self.finish_rollout(&olds, Some(&new)).await;
        }
        let views: Vec<RsView> = olds.iter().map(view).collect();
        let sizes = rolling_old_sizes(&self.p, &views, Some(&view(&new)));
        let mut scaled = false;
        for (rs, size) in olds.iter_mut().zip(sizes) {
            if size != rs_spec_replicas(rs) {
                scaled |= self.scale_rs(rs, size).await?;
            }
        }
        if !scaled && complete(&self.p, self.generation(), &self.orig_status) {
            self.cleanup(&olds).await?;
        }
        self.finish_rollout(&olds, Some(&new)).await
    }

    async fn rollout_recreate(
        &mut self,
        new: Option<ReplicaSet>,
        mut olds: Vec<ReplicaSet>,
    ) -> anyhow::Result<Action> {
        let mut scaled = false;
        for rs in olds.iter_mut().filter(|rs| rs_spec_replicas(rs) > 0) {
            scaled |= self.scale_rs(rs, 0).await?;
        }
        if scaled || self.old_pods_running(&olds, new.as_ref()).await? {
            self.finish_rollout(&olds, new.as_ref()).await?;
            return Ok(Action::RequeueAfter(RECREATE_POLL));
        }
        let mut new = match new {
            Some(n) => n,
            None => match self.sync_new_rs(None, &olds, true).await? {
                Some(n) => n,
                None => return Err(anyhow!("no new replica set")),
            },
        };
        self.scale_rs(&mut new, self.p.replicas).await?;
        if complete(&self.p, self.generation(), &self.orig_status) {
            self.cleanup(&olds).await?;
        }
        self.finish_rollout(&olds, Some(&new)).await
    }

    /// Recreate must not overlap versions: pods of old sets, terminating ones included,
    /// have to be gone first.
    async fn old_pods_running(
        &self,
        olds: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> anyhow::Result<bool> {
        if olds.iter().any(|rs| rs_status(rs).0 > 0) {
            return Ok(true);
        }
        let new_uid = new.and_then(|n| n.metadata.uid.clone());
        Ok(olds
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .filter(|u| Some(u) != new_uid.as_ref())
            .flat_map(|u| self.ctx.pods.by_index(&format!("owner/{u}")))
            .any(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            }))
    }

    /// Delete the oldest drained ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, olds: &[ReplicaSet]) -> anyhow::Result<()> {
        let Some(limit) = self.spec.revision_history_limit else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit.max(0));
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| {
            (
                revision_of(rs.metadata.annotations.as_ref()),
                created_secs(&rs.metadata),
            )
        });
        for rs in cleanable.into_iter().take(excess as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0
                || rs_spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: rs.metadata.resource_version.clone(),
                }),
                ..DeleteParams::background()
            };
            match self.rs_api().delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_conflict_or_gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // status

    /// Pause/resume show up as an Unknown Progressing condition, except after a timeout
    /// (which stays visible).
    fn check_paused_condition(&mut self) {
        if !has_progress_deadline(&self.spec) {
            return;
        }
        let cur = get_condition(self.status(), PROGRESSING).and_then(|c| c.reason.clone());
        if cur.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let paused_cond = cur.as_deref() == Some(PAUSED);
        let paused = self.spec.paused == Some(true);
        if paused && !paused_cond {
            set_condition(
                self.status(),
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    PAUSED,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                self.status(),
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    RESUMED,
                    "Deployment is resumed".into(),
                ),
            );
        }
    }

    /// Counts from the ReplicaSets plus the Available condition.
    fn sync_status(&mut self, olds: &[ReplicaSet], new: Option<&ReplicaSet>) {
        let all: Vec<&ReplicaSet> = olds.iter().chain(new).collect();
        let available = sum_counts(all.iter().map(|rs| rs_status(rs).2));
        let total_spec = sum_counts(all.iter().map(|rs| rs_spec_replicas(rs)));
        let generation = self.generation();
        let min_available = self.p.replicas - self.p.available_slack();
        let st = self.status();
        st.observed_generation = Some(generation);
        st.replicas = nz(sum_counts(all.iter().map(|rs| rs_status(rs).0)));
        st.updated_replicas = nz(new.map_or(0, |rs| rs_status(rs).0));
        st.ready_replicas = nz(sum_counts(all.iter().map(|rs| rs_status(rs).1)));
        st.available_replicas = nz(available);
        st.unavailable_replicas = nz(total_spec.saturating_sub(available).max(0));
        let c = if available >= min_available {
            new_condition(
                AVAILABLE,
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(st, c);
    }

    /// Status after a rollout step: counts, then the Progressing condition judged against
    /// the previous status (progress refreshes it; none for progressDeadlineSeconds times
    /// it out).
    async fn finish_rollout(
        &mut self,
        olds: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> anyhow::Result<Action> {
        let before = self.d.status.clone().unwrap_or_default();
        self.sync_status(olds, new);
        let has_deadline = has_progress_deadline(&self.spec);
        if !has_deadline {
            remove_condition(self.status(), PROGRESSING);
        }
        let cur = get_condition(&before, PROGRESSING).cloned();
        let p = self.p;
        let generation = self.generation();
        let after = self.d.status.clone().unwrap_or_default();
        let already_complete = after.replicas == after.updated_replicas
            && cur.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let subject = match new {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", self.d.name_any()),
        };
        if has_deadline && !already_complete {
            if complete(&p, generation, &after) {
                let c = new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                );
                set_condition(self.status(), c);
            } else if progressing(&before, &after) {
                let mut c = new_condition(
                    PROGRESSING,
                    "True",
                    RS_UPDATED,
                    format!("{subject} is progressing."),
                );
                if let Some(cur) = cur.as_ref().filter(|c| c.status == "True") {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                let st = self.status();
                remove_condition(st, PROGRESSING);
                set_condition(st, c);
            } else if deadline_remaining(&self.spec, &after, now().0.as_second())
                .is_some_and(|r| r < 0)
                || cur.as_ref().and_then(|c| c.reason.as_deref()) == Some(TIMED_OUT)
            {
                let c = new_condition(
                    PROGRESSING,
                    "False",
                    TIMED_OUT,
                    format!("{subject} has timed out progressing."),
                );
                set_condition(self.status(), c);
            }
        }
        self.write_status().await?;
        Ok(self.next_action())
    }

    /// What to wait for next: nothing once done or paused; otherwise a look every few
    /// seconds, sooner if the progress deadline falls earlier.
    fn next_action(&self) -> Action {
        let st = self.d.status.clone().unwrap_or_default();
        if self.spec.paused == Some(true) {
            return Action::Done;
        }
        let reason = get_condition(&st, PROGRESSING).and_then(|c| c.reason.clone());
        if complete(&self.p, self.generation(), &st)
            && (reason.as_deref() == Some(NEW_RS_AVAILABLE) || !has_progress_deadline(&self.spec))
        {
            return Action::Done;
        }
        if reason.as_deref() == Some(TIMED_OUT) {
            // Nothing changes on its own after a timeout; events bring any real news.
            return Action::RequeueAfter(TIMED_OUT_RESYNC);
        }
        let mut after = IN_PROGRESS_RESYNC;
        if let Some(rem) = deadline_remaining(&self.spec, &st, now().0.as_second()) {
            after = after.min(Duration::from_secs(rem.max(0) as u64 + 1));
        }
        Action::RequeueAfter(after)
    }

    async fn write_status(&mut self) -> anyhow::Result<()> {
        let st = self.status();
        if st.conditions.as_ref().is_some_and(|c| c.is_empty()) {
            st.conditions = None;
        }
        if self.d.status.as_ref() == Some(&self.orig_status) {
            return Ok(());
        }
        let updated = self
            .d_api()
            .replace_status(&self.d.name_any(), &PostParams::default(), &self.d)
            .await?;
        self.d.metadata = updated.metadata;
        self.orig_status = self.d.status.clone().unwrap_or_default();
        Ok(())
    }
}
