//! One pass over one Job (kube's syncJob): count what finished, decide whether the Job
//! ends, is suspended or runs, create or delete pods accordingly, store the status, and
//! only then let go of the finished pods' finalizers.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus, PodFailurePolicy};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use spindle_meta::events::{object_ref, EventType, Recorder};

use super::conditions::{self as cond, COMPLETE, FAILED};
use super::state::Memory;
use super::tracking::{self, has_finalizer, is_active, is_failed, is_terminating};
use super::{backoff, indexes, is_job, pods, policy};
use crate::controller_ref::controller_ref;
use crate::replicaset::is_ready;
use crate::runtime::{split_key, Action, Cache};

pub struct Ctx {
    client: Client,
    recorder: Recorder,
    jobs: Arc<Cache<Job>>,
    pods: Arc<Cache<Pod>>,
    memory: Memory,
    /// The Job as this controller last stored it, newer than the cache for a while.
    written: Mutex<std::collections::HashMap<String, Arc<Job>>>,
}

impl Ctx {
    pub fn new(
        client: Client,
        recorder: Recorder,
        jobs: Arc<Cache<Job>>,
        pods: Arc<Cache<Pod>>,
    ) -> Ctx {
        Ctx {
            client,
            recorder,
            jobs,
            pods,
            memory: Memory::new(),
            written: Mutex::new(Default::default()),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Job>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newer of the cached Job and the one last stored by this controller.
    fn freshest(&self, key: &str, cached: Arc<Job>) -> Arc<Job> {
        let rv = |j: &Job| {
            j.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut w = self.written();
        match w.get(key) {
            Some(mine) if mine.uid() == cached.uid() && rv(mine) > rv(&cached) => mine.clone(),
            _ => {
                w.remove(key);
                cached
            }
        }
    }

    fn publish(&self, r: &ObjectReference, ty: EventType, reason: &str, msg: String) {
        let (rec, r, reason) = (self.recorder.clone(), r.clone(), reason.to_string());
        tokio::spawn(async move { rec.publish(&r, ty, &reason, &msg).await });
    }
}

pub async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default").to_string();
    let live = ctx.jobs.get(key);
    release_orphans(ctx, &ns, name, live.as_ref().and_then(|j| j.uid())).await?;
    let Some(cached) = live else {
        ctx.memory.forget_job(key);
        ctx.written().remove(key);
        return Ok(Action::Done);
    };
    let job = ctx.freshest(key, cached);
    let uid = job.uid().unwrap_or_default();
    let owned = ctx.pods.by_index(&format!("owner/{uid}"));
    ctx.memory.observe(key, &owned);
    let status = job.status.clone().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() || cond::is_finished(&status) {
        // Nothing more is counted: the pods only lose their finalizers.
        let removed = ctx.memory.removed();
        let held: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| has_finalizer(p) && !p.uid().is_some_and(|u| removed.contains(&u)))
            .cloned()
            .collect();
        let (done, err) = pods::unfinalize(&ctx.client, &held).await;
        ctx.memory.unfinalized(done);
        return err.map_or(Ok(Action::Done), |e| Err(e.into()));
    }
    Pass::new(ctx, key, &ns, job, owned).run().await
}

/// Pods whose controlling ownerReference names a Job of this name that is gone (or was
/// replaced by a new one of the same name) keep no finalizer: the garbage collector
/// removes them, and nothing is left to count them.
async fn release_orphans(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    uid: Option<String>,
) -> anyhow::Result<()> {
    let orphans: Vec<Arc<Pod>> = ctx
        .pods
        .by_index(&format!("ns/{ns}"))
        .into_iter()
        .filter(|p| has_finalizer(p))
        .filter(|p| {
            controller_ref(&p.metadata).is_some_and(|r| {
                is_job(r) && r.name == name && uid.as_deref() != Some(r.uid.as_str())
            })
        })
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    let (done, err) = pods::unfinalize(&ctx.client, &orphans).await;
    ctx.memory.unfinalized(done);
    err.map_or(Ok(()), |e| Err(e.into()))
}

struct Pass<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    ns: &'a str,
    job: Arc<Job>,
    owned: Vec<Arc<Pod>>,
    oref: ObjectReference,
    now: Timestamp,
    requeue: Option<Duration>,
    error: Option<kube::Error>,
}

impl<'a> Pass<'a> {
    fn new(ctx: &'a Ctx, key: &'a str, ns: &'a str, job: Arc<Job>, owned: Vec<Arc<Pod>>) -> Self {
        let oref = object_ref(job.as_ref());
        Pass {
            ctx,
            key,
            ns,
            job,
            owned,
            oref,
            now: Timestamp::now(),
            requeue: None,
            error: None,
        }
    }

    fn spec(&self) -> k8s_openapi::api::batch::v1::JobSpec {
        self.job.spec.clone().unwrap_or_default()
    }

    /// `Some(completions)` for an Indexed Job.
    fn indexed(&self) -> Option<i32> {
        let spec = self.spec();
        (spec.completion_mode.as_deref() == Some("Indexed")).then(|| spec.completions.unwrap_or(0))
    }

    fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    async fn run(mut self) -> anyhow::Result<Action> {
        let spec = self.spec();
        let indexed = self.indexed();
        let mut status = self.job.status.clone().unwrap_or_default();
        let removed = self.ctx.memory.removed();
        let policy = spec.pod_failure_policy.as_ref();
        let ignored: HashSet<String> = self
            .owned
            .iter()
            .filter(|p| is_failed(p) && !policy::counts(policy, p))
            .filter_map(|p| p.uid())
            .collect();
        let tally = tracking::tally(&status, indexed, &self.owned, &removed, &ignored);
        status.uncounted_terminated_pods = Some(tally.uncounted.clone());
        if indexed.is_some() {
            status.completed_indexes = Some(indexes::format(&tally.completed));
            status.succeeded = Some(tally.completed.len() as i32);
        }
        let deleting = self.ctx.memory.deleting();
        let gone = |p: &Pod| p.uid().is_some_and(|u| deleting.contains(&u));
        let mut active: Vec<Arc<Pod>> = self
            .owned
            .iter()
            .filter(|p| is_active(p) && !gone(p))
            .cloned()
            .collect();
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let succeeded = match indexed {
            Some(_) => tally.completed.len() as i32,
            None => {
                status.succeeded.unwrap_or(0)
                    + uncounted.succeeded.as_ref().map_or(0, Vec::len) as i32
            }
        };
        let mut failed =
            status.failed.unwrap_or(0) + uncounted.failed.as_ref().map_or(0, Vec::len) as i32;
        let template_spec = spec.template.spec.clone().unwrap_or_default();
        if template_spec.restart_policy.as_deref() == Some("OnFailure") {
            // Restarts in place are failures too (kube's pastBackoffLimitOnFailure).
            failed += active.iter().map(|p| restarts(p)).sum::<i32>();
        }
        let suspended = spec.suspend.unwrap_or(false);

        // Suspension and the clock of activeDeadlineSeconds.
        if suspended {
            if cond::ensure(
                &mut status,
                cond::SUSPENDED,
                "True",
                ("JobSuspended", "Job suspended"),
                self.now,
            ) {
                self.ctx.publish(
                    &self.oref,
                    EventType::Normal,
                    "Suspended",
                    "Job suspended".into(),
                );
            }
        } else {
            if cond::ensure(
                &mut status,
                cond::SUSPENDED,
                "False",
                ("JobResumed", "Job resumed"),
                self.now,
            ) {
                self.ctx.publish(
                    &self.oref,
                    EventType::Normal,
                    "Resumed",
                    "Job resumed".into(),
                );
                // The deadline counts the time the Job is continuously active.
                status.start_time = Some(Time(self.now));
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(self.now));
            }
        }

        // Whether the Job is ending, and how.
        let mut ending = if let Some(c) =
            cond::find(&status, cond::FAILURE_TARGET).filter(|c| c.status == "True")
        {
            Some((
                FAILED,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ))
        } else if let Some(c) =
            cond::find(&status, cond::SUCCESS_CRITERIA_MET).filter(|c| c.status == "True")
        {
            Some((
                COMPLETE,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ))
        } else if let Some(msg) = self.fail_job_message(policy) {
            // Recorded before any finalizer goes, so the reason survives the pods.
            let why = (cond::POD_FAILURE_POLICY, msg.as_str());
            cond::ensure(&mut status, cond::FAILURE_TARGET, "True", why, self.now);
            Some((FAILED, why.0.into(), msg))
        } else {
            None
        };
        if ending.is_none() {
            let deadline = if suspended {
                None
            } else {
                cond::deadline(&self.job, status.start_time.as_ref(), self.now)
            };
            let target = if failed > spec.backoff_limit.unwrap_or(6) {
                Some((cond::FAILURE_TARGET, cond::BACKOFF_LIMIT))
            } else if matches!(deadline, Some(Ok(()))) {
                Some((cond::FAILURE_TARGET, cond::DEADLINE))
            } else if reached(indexed, spec.completions, succeeded, active.len()) {
                Some((cond::SUCCESS_CRITERIA_MET, cond::COMPLETIONS_REACHED))
            } else {
                if let Some(Err(left)) = deadline {
                    self.requeue_after(left);
                }
                None
            };
            if let Some((ty, why)) = target {
                cond::ensure(&mut status, ty, "True", why, self.now);
                let terminal = if ty == cond::FAILURE_TARGET {
                    FAILED
                } else {
                    COMPLETE
                };
                ending = Some((terminal, why.0.into(), why.1.into()));
            }
        }

        // The pods.
        let mut created = 0;
        if ending.is_some() || suspended {
            self.delete(&active).await;
            active.clear();
        } else {
            let (made, stopped) = self
                .manage(&spec, indexed, &tally.completed, succeeded, &active)
                .await;
            created = made;
            active.retain(|p| !stopped.contains(&p.name_any()));
        }
        let deleting = self.ctx.memory.deleting();
        let terminating = self
            .owned
            .iter()
            .filter(|p| {
                is_terminating(p)
                    || (is_active(p) && p.uid().is_some_and(|u| deleting.contains(&u)))
            })
            .count() as i32;
        let pending = self.ctx.memory.pending_creates(self.key).len() as i32;
        status.active = Some(active.len() as i32 + pending.max(created));
        status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
        status.terminating = Some(terminating);
        status.failed = Some(status.failed.unwrap_or(0));
        status.succeeded = Some(status.succeeded.unwrap_or(0));
        self.store(status.clone()).await?;

        // The finished pods are in the stored status: their finalizers may go now.
        let (done, err) = pods::unfinalize(&self.ctx.client, &tally.unfinalize).await;
        self.ctx.memory.unfinalized(done);
        if let Some(e) = err {
            self.error = Some(e);
        }
        let removed = self.ctx.memory.removed();
        tracking::settle(&mut status, &self.owned, &removed);
        let idle =
            status.active == Some(0) && terminating == 0 && tracking::uncounted_len(&status) == 0;
        let mut finished = None;
        if let (Some((ty, reason, message)), true) = (&ending, idle) {
            cond::ensure(&mut status, ty, "True", (reason, message), self.now);
            if *ty == COMPLETE {
                status.completion_time = Some(Time(self.now));
            }
            finished = Some((*ty, reason.clone(), message.clone()));
        }
        self.store(status).await?;
        match finished {
            Some((COMPLETE, _, _)) => self.ctx.publish(
                &self.oref,
                EventType::Normal,
                "Completed",
                "Job completed".into(),
            ),
            Some((_, reason, message)) => {
                self.ctx
                    .publish(&self.oref, EventType::Warning, &reason, message)
            }
            None => {}
        }
        if let Some(e) = self.error {
            return Err(e.into());
        }
        Ok(self.requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// The message of the first failed pod that matches a FailJob rule, if any.
    fn fail_job_message(&self, policy: Option<&PodFailurePolicy>) -> Option<String> {
        policy?;
        self.owned
            .iter()
            .filter(|p| is_failed(p))
            .find_map(|p| match policy::matching(policy, p) {
                Some(policy::Action::FailJob(msg)) => Some(msg),
                _ => None,
            })
    }

    /// Create or stop pods towards what the Job wants running now. Returns the number
    /// created and the names stopped.
    async fn manage(
        &mut self,
        spec: &k8s_openapi::api::batch::v1::JobSpec,
        indexed: Option<i32>,
        completed: &BTreeSet<i32>,
        succeeded: i32,
        active: &[Arc<Pod>],
    ) -> (i32, HashSet<String>) {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let pending = self.ctx.memory.pending_creates(self.key);
        let mut stop: Vec<Arc<Pod>> = Vec::new();
        let want: i32 = match (indexed, spec.completions) {
            (Some(n), _) => parallelism.min(n - completed.len() as i32),
            (None, Some(c)) => parallelism.min(c - succeeded),
            // Without completions, once one pod succeeded no new one starts.
            (None, None) if succeeded > 0 => active.len() as i32,
            (None, None) => parallelism,
        }
        .max(0);
        let mut to_make: Vec<Option<i32>> = Vec::new();
        let mut running = active.to_vec();
        if let Some(n) = indexed {
            // A pod whose index is done (or out of range) or duplicated has no work left.
            let mut seen = HashSet::new();
            running.retain(|p| {
                let keep = tracking::completion_index(p)
                    .is_some_and(|i| i < n && !completed.contains(&i) && seen.insert(i));
                if !keep {
                    stop.push(p.clone());
                }
                keep
            });
            let busy: HashSet<i32> = seen
                .into_iter()
                .chain(pending.iter().flatten().copied())
                .collect();
            let room = (want - running.len() as i32 - pending.len() as i32).max(0) as usize;
            to_make = (0..n)
                .filter(|i| !completed.contains(i) && !busy.contains(i))
                .take(room)
                .map(Some)
                .collect();
        } else {
            let have = running.len() as i32 + pending.len() as i32;
            if have < want {
                to_make = vec![None; (want - have) as usize];
            }
        }
        let excess = running.len() as i32 + pending.len() as i32 - want;
        if excess > 0 && pending.is_empty() {
            // Stop the pods that matter least: not yet ready, then the newest.
            running.sort_by_key(|p| {
                (
                    is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.clone()),
                )
            });
            stop.extend(running.into_iter().take(excess as usize));
        }
        let stopped: HashSet<String> = stop.iter().map(|p| p.name_any()).collect();
        if !stop.is_empty() {
            self.delete(&stop).await;
        }
        if to_make.is_empty() {
            return (0, stopped);
        }
        let wait = backoff::remaining(self.owned.iter().map(|p| p.as_ref()), self.now);
        if !wait.is_zero() {
            self.requeue_after(wait);
            return (0, stopped);
        }
        (self.create(to_make).await, stopped)
    }

    async fn create(&mut self, indexes: Vec<Option<i32>>) -> i32 {
        let job_name = self.job.name_any();
        let named: Vec<(String, Option<i32>)> = indexes
            .into_iter()
            .map(|i| {
                let base = match i {
                    Some(i) => format!("{job_name}-{i}-"),
                    None => format!("{job_name}-"),
                };
                (spindle_meta::names::generate_name(&base), i)
            })
            .collect();
        self.ctx.memory.expect_creates(self.key, &named);
        let built = named
            .iter()
            .map(|(n, i)| pods::build(&self.job, n, *i))
            .collect();
        let mut made = 0;
        for (name, r) in pods::create(&self.ctx.client, self.ns, built).await {
            match r {
                Ok(_) => {
                    made += 1;
                    self.ctx.publish(
                        &self.oref,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                }
                Err(e) => {
                    self.ctx.memory.create_failed(self.key, &name);
                    self.ctx.publish(
                        &self.oref,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    self.error = Some(e);
                }
            }
        }
        made
    }

    async fn delete(&mut self, victims: &[Arc<Pod>]) {
        if victims.is_empty() {
            return;
        }
        self.ctx
            .memory
            .deleted(victims.iter().filter_map(|p| p.uid()));
        let (done, err) = pods::delete(&self.ctx.client, victims).await;
        for name in done {
            self.ctx.publish(
                &self.oref,
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            );
        }
        if let Some(e) = err {
            self.error = Some(e);
        }
    }

    /// Store `status` if it differs from the Job's, with the Job's resourceVersion as a
    /// precondition: a status computed from a stale Job must not overwrite a newer one
    /// (it could count a pod twice).
    async fn store(&mut self, status: JobStatus) -> anyhow::Result<()> {
        let current = self.job.status.clone().unwrap_or_default();
        if serde_json::to_value(&current)? == serde_json::to_value(&status)? {
            return Ok(());
        }
        let mut job = (*self.job).clone();
        job.status = Some(status);
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let stored = Arc::new(
            api.replace_status(&job.name_any(), &PostParams::default(), &job)
                .await?,
        );
        self.ctx
            .written()
            .insert(self.key.to_string(), stored.clone());
        self.job = stored;
        Ok(())
    }
}

/// Whether enough pods succeeded: every index, `completions` of them, or (without
/// completions) any one with none left running.
fn reached(indexed: Option<i32>, completions: Option<i32>, succeeded: i32, active: usize) -> bool {
    match (indexed, completions) {
        (Some(n), _) => succeeded >= n,
        (None, Some(c)) => succeeded >= c,
        (None, None) => succeeded > 0 && active == 0,
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}
