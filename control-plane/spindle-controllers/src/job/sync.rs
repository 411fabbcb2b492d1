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
use spindle_meta::selector::Matcher;

use super::conditions::{self as cond, COMPLETE, FAILED};
use super::per_index::{self, PerIndex};
use super::state::Memory;
use super::tracking::{self, has_finalizer, is_active, is_failed, is_terminating};
use super::{backoff, indexes, is_job, pods, policy, success};
use crate::controller_ref::{controller_ref, RefManager};
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
    let mut owned = ctx.pods.by_index(&format!("owner/{uid}"));
    ctx.memory.observe(key, &owned);
    let status = job.status.clone().unwrap_or_default();
    let manual = job.spec.as_ref().and_then(|s| s.manual_selector) == Some(true);
    if manual && job.metadata.deletion_timestamp.is_none() && !cond::is_finished(&status) {
        owned = claim(ctx, &ns, &job).await?;
    }
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

/// With `manualSelector`, the Job owns the pods its selector picks, as a ReplicaSet
/// does: it adopts matching orphans (adding the tracking finalizer, so they are counted)
/// and releases its pods that stop matching (taking the finalizer off). A generated
/// selector names the Job's uid, which no other pod carries, so only a manual one
/// needs this.
async fn claim(ctx: &Ctx, ns: &str, job: &Arc<Job>) -> anyhow::Result<Vec<Arc<Pod>>> {
    let uid = job.uid().unwrap_or_default();
    let selector = Matcher::for_controller(job.spec.as_ref().and_then(|s| s.selector.as_ref()));
    let candidates = ctx
        .pods
        .by_index(&format!("ns/{ns}"))
        .into_iter()
        .filter(|p| controller_ref(&p.metadata).is_none_or(|r| r.uid == uid));
    let claimed = RefManager::new(&ctx.client, job.as_ref())
        .with_finalizer(tracking::FINALIZER)
        .claim(candidates, |p: &Pod| selector.matches(p.labels()))
        .await?;
    Ok(claimed)
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
        let per_index = self.per_index(&status, indexed, &removed);
        let mut skip = removed.clone();
        skip.extend(per_index.iter().flat_map(PerIndex::held_uids));
        let tally = tracking::tally(&status, indexed, &self.owned, &skip, &ignored);
        status.uncounted_terminated_pods = Some(tally.uncounted.clone());
        if indexed.is_some() {
            status.completed_indexes = Some(indexes::format(&tally.completed));
            status.succeeded = Some(tally.completed.len() as i32);
        }
        if let Some(pi) = &per_index {
            status.failed_indexes = Some(indexes::format(&pi.failed));
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
            let n = indexed.unwrap_or(0);
            let indexes_verdict = per_index
                .as_ref()
                .and_then(|pi| pi.verdict(spec.max_failed_indexes, n, tally.completed.len()));
            let success_met = indexed
                .and_then(|n| success::matching(spec.success_policy.as_ref(), n, &tally.completed));
            let owned = |(a, b): (&str, &str)| (a.to_string(), b.to_string());
            let target = if failed > spec.backoff_limit.unwrap_or(6) {
                Some((cond::FAILURE_TARGET, owned(cond::BACKOFF_LIMIT)))
            } else if matches!(deadline, Some(Ok(()))) {
                Some((cond::FAILURE_TARGET, owned(cond::DEADLINE)))
            } else if let Some(why) = indexes_verdict {
                Some((cond::FAILURE_TARGET, owned(why)))
            } else if let Some(msg) = success_met {
                Some((cond::SUCCESS_CRITERIA_MET, (success::REASON.into(), msg)))
            } else if reached(indexed, spec.completions, succeeded, active.len()) {
                Some((cond::SUCCESS_CRITERIA_MET, owned(cond::COMPLETIONS_REACHED)))
            } else {
                if let Some(Err(left)) = deadline {
                    self.requeue_after(left);
                }
                None
            };
            if let Some((ty, (reason, message))) = target {
                cond::ensure(&mut status, ty, "True", (&reason, &message), self.now);
                let terminal = if ty == cond::FAILURE_TARGET {
                    FAILED
                } else {
                    COMPLETE
                };
                ending = Some((terminal, reason, message));
            }
        }

        // The pods.
        let mut created = 0;
        if ending.is_some() || suspended {
            self.delete(&active).await;
            active.clear();
        } else {
            let (made, stopped) = self
                .manage(
                    &spec,
                    indexed,
                    &tally.completed,
                    per_index.as_ref(),
                    succeeded,
                    &active,
                )
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
        // A held pod is counted once the Job ends (the next pass): not finished before.
        let held = per_index.as_ref().is_some_and(|pi| !pi.held.is_empty());
        let idle = status.active == Some(0)
            && terminating == 0
            && tracking::uncounted_len(&status) == 0
            && !held;
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

    /// backoffLimitPerIndex's view of an Indexed Job that has one.
    fn per_index(
        &self,
        status: &JobStatus,
        indexed: Option<i32>,
        removed: &HashSet<String>,
    ) -> Option<PerIndex> {
        let spec = self.job.spec.as_ref()?;
        let (n, limit) = (indexed?, spec.backoff_limit_per_index?);
        let mut succeeded = indexes::parse(status.completed_indexes.as_deref(), n);
        succeeded.extend(
            self.owned
                .iter()
                .filter(|p| tracking::is_succeeded(p))
                .filter_map(|p| tracking::completion_index(p)),
        );
        let ending = cond::is_true(status, cond::FAILURE_TARGET)
            || cond::is_true(status, cond::SUCCESS_CRITERIA_MET);
        let rules = per_index::Rules {
            completions: n,
            limit,
            policy: spec.pod_failure_policy.as_ref(),
        };
        Some(per_index::assess(
            &rules,
            status,
            &self.owned,
            removed,
            &succeeded,
            ending,
        ))
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
        per_index: Option<&PerIndex>,
        succeeded: i32,
        active: &[Arc<Pod>],
    ) -> (i32, HashSet<String>) {
        let failed_ix = per_index.map(|pi| &pi.failed);
        let done = |i: &i32| completed.contains(i) || failed_ix.is_some_and(|f| f.contains(i));
        let undone = indexed.map_or(0, |n| (0..n).filter(|i| !done(i)).count() as i32);
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let pending = self.ctx.memory.pending_creates(self.key);
        let mut stop: Vec<Arc<Pod>> = Vec::new();
        let want: i32 = match (indexed, spec.completions) {
            (Some(_), _) => parallelism.min(undone),
            (None, Some(c)) => parallelism.min(c - succeeded),
            // Without completions, once one pod succeeded no new one starts.
            (None, None) if succeeded > 0 => active.len() as i32,
            (None, None) => parallelism,
        }
        .max(0);
        let mut to_make: Vec<Option<i32>> = Vec::new();
        let mut running = active.to_vec();
        if let Some(n) = indexed {
            // A pod whose index is done or failed (or out of range) or duplicated has no
            // work left.
            let mut seen = HashSet::new();
            running.retain(|p| {
                let keep = tracking::completion_index(p)
                    .is_some_and(|i| i < n && !done(&i) && seen.insert(i));
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
            // Under backoffLimitPerIndex each index waits out its own back-off.
            let mut wait = Duration::ZERO;
            let now = self.now;
            let ready = |i: &i32| {
                let w = per_index.map_or(Duration::ZERO, |pi| pi.wait(*i, now));
                if !w.is_zero() {
                    wait = if wait.is_zero() { w } else { wait.min(w) };
                }
                w.is_zero()
            };
            to_make = (0..n)
                .filter(|i| !done(i) && !busy.contains(i))
                .filter(ready)
                .take(room)
                .map(Some)
                .collect();
            if !wait.is_zero() {
                self.requeue_after(wait);
            }
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
        if per_index.is_none() {
            let wait = backoff::remaining(self.owned.iter().map(|p| p.as_ref()), self.now);
            if !wait.is_zero() {
                self.requeue_after(wait);
                return (0, stopped);
            }
        }
        (self.create(to_make, per_index).await, stopped)
    }

    async fn create(&mut self, indexes: Vec<Option<i32>>, per_index: Option<&PerIndex>) -> i32 {
        let policy = self.spec().pod_failure_policy;
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
            .map(|(n, i)| {
                let mut pod = pods::build(&self.job, n, *i);
                if let (Some(pi), Some(ix)) = (per_index, i) {
                    let ann = pod
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    ann.extend(pi.annotations(*ix, policy.as_ref()));
                }
                pod
            })
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
