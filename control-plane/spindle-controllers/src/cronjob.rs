//! CronJob controller, as kube-controller-manager's cronjob controller (v2): at each
//! scheduled time it creates a Job from `spec.jobTemplate` named
//! `<cronjob>-<scheduled minutes since the epoch>`, so a restarted controller that tries
//! the same time again meets AlreadyExists instead of starting a second run. It keeps
//! `status.active`, `lastScheduleTime` and `lastSuccessfulTime`, applies the concurrency
//! policy, `startingDeadlineSeconds`, `suspend` and the history limits, and requeues
//! each CronJob for its next scheduled time (no polling).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};
use spindle_meta::cron::{load_time_zone, Schedule};
use spindle_meta::events::{object_ref, EventType, Recorder};

use crate::controller_ref::{controller_ref, owner_reference};
use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};

/// Concurrent reconciles (distinct CronJobs).
const WORKERS: usize = 2;
/// Slack added to a requeue so the wake-up lands after the scheduled time even with a
/// little clock skew (kube's `nextScheduleDelta`).
const NEXT_SCHEDULE_DELTA: TimeDelta = TimeDelta::milliseconds(100);
/// More missed start times than this and only the latest is started, with a warning.
const TOO_MANY_MISSED: i64 = 100;
/// The annotation carrying a Job's scheduled time (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Ctx {
    client: Client,
    cronjobs: Arc<Cache<CronJob>>,
    /// Jobs indexed by the `namespace/name` of their controlling CronJob.
    jobs: Arc<Cache<Job>>,
    recorder: Recorder,
}

/// `namespace/name` of the CronJob controlling `job`, if one does.
fn owner_key(job: &Job) -> Option<String> {
    let r = controller_ref(&job.metadata).filter(|r| r.kind == "CronJob")?;
    Some(format!(
        "{}/{}",
        job.namespace().unwrap_or_default(),
        r.name
    ))
}

pub async fn run(client: Client, recorder: Recorder) -> anyhow::Result<()> {
    let queue: Arc<Queue<String>> = Queue::new();
    let q = queue.clone();
    let cronjobs = informer(
        Api::<CronJob>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            if let Change::Upsert { new, old } = ch {
                let key = key_of(new.as_ref());
                // A new schedule may come sooner than the wake-up already queued.
                let moved = old.is_some_and(|o| {
                    let (a, b) = (o.spec.as_ref(), new.spec.as_ref());
                    a.map(|s| (&s.schedule, &s.time_zone)) != b.map(|s| (&s.schedule, &s.time_zone))
                });
                match parse_schedule(new).ok().filter(|_| moved) {
                    Some(sched) => {
                        let after = next_schedule_in(&times(new), Utc::now(), &sched);
                        q.add_after(key, after.unwrap_or(Duration::ZERO));
                    }
                    None => q.add(key),
                }
            }
        },
    );
    let q = queue.clone();
    let jobs = informer(
        Api::<Job>::all(client.clone()),
        watch_config(),
        Some(Box::new(|j: &Job| owner_key(j).into_iter().collect())),
        move |ch| {
            for j in ch.states() {
                if let Some(k) = owner_key(j) {
                    q.add(k);
                }
            }
        },
    );
    cronjobs.wait_synced().await;
    jobs.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        cronjobs,
        jobs,
        recorder,
    });
    queue
        .run(WORKERS, "cronjob", move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let Some(cj) = ctx.cronjobs.get(key) else {
        return Ok(Action::Done);
    };
    let uid = cj.uid().unwrap_or_default();
    // Owned by name, as kube matches them; a namesake's leftovers carry another uid.
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .by_index(key)
        .into_iter()
        .filter(|j| controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let mut s = Sync {
        ctx,
        cj: (*cj).clone(),
        cref: object_ref(cj.as_ref()),
        ns: cj.namespace().unwrap_or_default(),
        update: false,
    };
    s.cleanup_finished_jobs(&jobs).await;
    let outcome = s.sync(&jobs, Utc::now()).await;
    if s.update {
        Api::<CronJob>::namespaced(ctx.client.clone(), &s.ns)
            .replace_status(&s.cj.name_any(), &PostParams::default(), &s.cj)
            .await
            .context("update cronjob status")?;
    }
    match outcome? {
        Some(after) => Ok(Action::RequeueAfter(after)),
        None => Ok(Action::Done),
    }
}

/// One pass over one CronJob; `cj.status` gathers the changes, written once at the end
/// when `update` says so.
struct Sync<'a> {
    ctx: &'a Ctx,
    cj: CronJob,
    cref: ObjectReference,
    ns: String,
    update: bool,
}

impl Sync<'_> {
    async fn event(&self, ty: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .publish(&self.cref, ty, reason, message)
            .await;
    }

    fn jobs_api(&self) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    fn active(&mut self) -> &mut Vec<ObjectReference> {
        self.cj
            .status
            .get_or_insert_with(Default::default)
            .active
            .get_or_insert_with(Vec::new)
    }

    fn is_active(&self, uid: &str) -> bool {
        self.cj
            .status
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .is_some_and(|a| a.iter().any(|r| r.uid.as_deref() == Some(uid)))
    }

    fn forget_active(&mut self, uid: &str) {
        self.active().retain(|r| r.uid.as_deref() != Some(uid));
    }

    /// Delete a Job (its pods go in the background) and drop it from `active`.
    async fn delete_job(&mut self, name: &str, uid: &str) -> bool {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.jobs_api().delete(name, &dp).await {
            Ok(_) => {
                self.forget_active(uid);
                self.update = true;
                let msg = format!("Deleted job {name}");
                self.event(EventType::Normal, "SuccessfulDelete", &msg)
                    .await;
                true
            }
            Err(e) => {
                let msg = format!("Deleted job: {}", api_message(&e));
                self.event(EventType::Warning, "FailedDelete", &msg).await;
                false
            }
        }
    }

    /// Keep the newest `successfulJobsHistoryLimit` Complete and `failedJobsHistoryLimit`
    /// Failed Jobs; delete the older ones, oldest start first.
    async fn cleanup_finished_jobs(&mut self, jobs: &[Arc<Job>]) {
        let Some(spec) = self.cj.spec.clone() else {
            return;
        };
        for (limit, kind) in [
            (spec.successful_jobs_history_limit, "Complete"),
            (spec.failed_jobs_history_limit, "Failed"),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> =
                jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            done.sort_by(|a, b| start_order(a, b));
            for j in done.into_iter().take(excess) {
                self.delete_job(&j.name_any(), &j.uid().unwrap_or_default())
                    .await;
            }
        }
    }

    /// kube's `syncCronJob`: settle `active` with the Jobs seen, then start the run due,
    /// if any. Returns when to look again.
    async fn sync(
        &mut self,
        jobs: &[Arc<Job>],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Duration>> {
        for j in jobs {
            let uid = j.uid().unwrap_or_default();
            let listed = self.is_active(&uid);
            match finished(j) {
                None if !listed => {
                    // Created by hand (`kubectl create job --from`), or before a crash
                    // that lost the status write: kube only says so.
                    let msg = format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    );
                    self.event(EventType::Warning, "UnexpectedJob", &msg).await;
                }
                Some(cond) if listed => {
                    self.forget_active(&uid);
                    self.update = true;
                    let msg = format!("Saw completed job: {}, condition: {cond}", j.name_any());
                    self.event(EventType::Normal, "SawCompletedJob", &msg).await;
                }
                _ => {}
            }
            if finished(j) == Some("Complete") {
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                let status = self.cj.status.get_or_insert_with(Default::default);
                if done.is_some()
                    && (status.last_successful_time.is_none()
                        || secs(&done) > secs(&status.last_successful_time))
                {
                    status.last_successful_time = done;
                    self.update = true;
                }
            }
        }
        // An active Job gone from the cache may be gone for good, or the watch may lag:
        // ask the server.
        let listed: Vec<ObjectReference> = self
            .cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for r in listed {
            let uid = r.uid.clone().unwrap_or_default();
            if jobs
                .iter()
                .any(|j| j.uid().as_deref() == Some(uid.as_str()))
            {
                continue;
            }
            let name = r.name.clone().unwrap_or_default();
            if self.jobs_api().get_opt(&name).await?.is_none() {
                let msg = format!("Active job went missing: {name}");
                self.event(EventType::Normal, "MissingJob", &msg).await;
                self.forget_active(&uid);
                self.update = true;
            }
        }
        if self.cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(spec) = self.cj.spec.clone() else {
            return Ok(None);
        };
        if let Some(tz) = &spec.time_zone {
            if let Err(e) = load_time_zone(tz) {
                let msg = format!("invalid timeZone: {tz:?}: {e}");
                self.event(EventType::Warning, "UnknownTimeZone", &msg)
                    .await;
                return Ok(None);
            }
        }
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        if spec.schedule.contains("TZ") {
            let msg = format!("CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details", spec.schedule);
            self.event(EventType::Warning, "UnsupportedSchedule", &msg)
                .await;
        }
        let sched = match parse_schedule(&self.cj) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.event(EventType::Warning, "UnparseableSchedule", &msg)
                    .await;
                return Ok(None);
            }
        };
        let t = times(&self.cj);
        let requeue = |cj: &CronJob| next_schedule_in(&times(cj), now, &sched);
        let scheduled = match next_schedule_time(&t, now, &sched) {
            Err(e) => {
                let msg = format!("invalid schedule: {} : {e}", spec.schedule);
                self.event(EventType::Warning, "InvalidSchedule", &msg)
                    .await;
                return Ok(None);
            }
            Ok(None) => return Ok(requeue(&self.cj)),
            Ok(Some((at, too_many))) => {
                if too_many {
                    let msg = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
                    self.event(EventType::Warning, "TooManyMissedTimes", msg)
                        .await;
                }
                at
            }
        };
        if let Some(deadline) = spec.starting_deadline_seconds {
            if scheduled + TimeDelta::seconds(deadline) < now {
                let msg = format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.format("%a, %d %b %Y %H:%M:%S %z")
                );
                self.event(EventType::Warning, "MissSchedule", &msg).await;
                return Ok(requeue(&self.cj));
            }
        }
        let name = job_name(&self.cj.name_any(), scheduled);
        let already = self
            .cj
            .status
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .is_some_and(|a| a.iter().any(|r| r.name.as_deref() == Some(name.as_str())))
            || t.last_schedule.map(|l| l.timestamp()) == Some(scheduled.timestamp());
        if already {
            return Ok(requeue(&self.cj));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let running = self
            .cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        if policy == "Forbid" && !running.is_empty() {
            let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
            self.event(EventType::Normal, "JobAlreadyActive", msg).await;
            return Ok(requeue(&self.cj));
        }
        if policy == "Replace" {
            for r in running {
                let job_name = r.name.clone().unwrap_or_default();
                let job = match self.jobs_api().get(&job_name).await {
                    Ok(j) => j,
                    Err(e) => {
                        let msg = format!("Get job: {}", api_message(&e));
                        self.event(EventType::Warning, "FailedGet", &msg).await;
                        return Err(e.into());
                    }
                };
                if !self
                    .delete_job(&job_name, &job.uid().unwrap_or_default())
                    .await
                {
                    anyhow::bail!("could not replace job {}/{job_name}", self.ns);
                }
            }
        }
        let job = job_from_template(&self.cj, &spec, scheduled)?;
        let created = match self.jobs_api().create(&PostParams::default(), &job).await {
            Ok(j) => {
                let msg = format!("Created job {}", j.name_any());
                self.event(EventType::Normal, "SuccessfulCreate", &msg)
                    .await;
                j
            }
            // Created on an earlier pass whose status write was lost: adopt it into
            // `active` if it is ours, never start the run twice.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let j = self.jobs_api().get(&name).await?;
                let ours = controller_ref(&j.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.cj.metadata.uid.as_ref());
                if !ours || self.is_active(&j.uid().unwrap_or_default()) {
                    return Ok(requeue(&self.cj));
                }
                tracing::info!(job = %name, "job already exists");
                j
            }
            Err(e) => {
                let msg = format!("Error creating job: {}", api_message(&e));
                self.event(EventType::Warning, "FailedCreate", &msg).await;
                return Err(e.into());
            }
        };
        self.active().push(ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: created.metadata.name.clone(),
            namespace: created.metadata.namespace.clone(),
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
            ..Default::default()
        });
        self.cj
            .status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(to_time(scheduled)?);
        self.update = true;
        Ok(requeue(&self.cj))
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// `Complete` or `Failed` when the Job has finished (that condition is True).
fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => Some("Complete"),
            ("Failed", "True") => Some("Failed"),
            _ => None,
        })
}

/// kube's `byJobStartTime`: started before not started, earlier first, then by name.
fn start_order(a: &Job, b: &Job) -> std::cmp::Ordering {
    let start = |j: &Job| secs(&j.status.as_ref().and_then(|s| s.start_time.clone()));
    match (start(a), start(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.name_any().cmp(&b.name_any()),
    }
}

fn secs(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

fn to_chrono(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn to_time(t: DateTime<Utc>) -> anyhow::Result<Time> {
    Ok(Time(k8s_openapi::jiff::Timestamp::new(
        t.timestamp(),
        t.timestamp_subsec_nanos() as i32,
    )?))
}

/// The schedule in the CronJob's `timeZone` (UTC without one; a `TZ=` prefix in the
/// schedule, which only older objects can have, carries its own).
fn parse_schedule(cj: &CronJob) -> Result<Schedule, String> {
    let spec = cj.spec.as_ref().ok_or("no spec")?;
    let tz = spec.time_zone.as_deref().unwrap_or("");
    let tz = load_time_zone(tz)?;
    Schedule::parse_in(&spec.schedule, tz).map_err(|e| e.0)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`: deterministic, so one
/// scheduled time is one Job whatever the controller's restarts.
pub fn job_name(cronjob: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", scheduled.timestamp() / 60)
}

fn job_from_template(
    cj: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    scheduled: DateTime<Utc>,
) -> anyhow::Result<Job> {
    let tmeta = spec.job_template.metadata.clone().unwrap_or_default();
    let tz = load_time_zone(spec.time_zone.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(cj)]),
            ..Default::default()
        },
        spec: spec.job_template.spec.clone(),
        status: None,
    })
}

/// What the schedule arithmetic reads of a CronJob.
#[derive(Clone, Debug)]
struct Times {
    created: DateTime<Utc>,
    last_schedule: Option<DateTime<Utc>>,
    starting_deadline: Option<i64>,
}

fn times(cj: &CronJob) -> Times {
    Times {
        created: cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(to_chrono)
            .unwrap_or_default(),
        last_schedule: cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(to_chrono),
        starting_deadline: cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

#[derive(Debug)]
struct Recent {
    /// Where the search started: the last scheduled time, or creation.
    earliest: DateTime<Utc>,
    /// The latest scheduled time not after now, if one was missed since `earliest`.
    latest: Option<DateTime<Utc>>,
    missed: Missed,
}

/// kube's `mostRecentScheduleTime`: the latest time due since the last run (or since
/// the deadline, with `with_deadline`), counting the missed ones roughly from the gap
/// between the first two so that a long outage costs no walk over every missed time.
fn most_recent(
    t: &Times,
    now: DateTime<Utc>,
    sched: &Schedule,
    with_deadline: bool,
) -> Result<Recent, String> {
    let mut earliest = t.last_schedule.unwrap_or(t.created);
    if let Some(d) = t.starting_deadline.filter(|_| with_deadline) {
        earliest = earliest.max(now - TimeDelta::seconds(d));
    }
    let mut r = Recent {
        earliest,
        latest: None,
        missed: Missed::None,
    };
    let never = || "time difference between two schedules is less than 1 second".to_string();
    let t1 = sched.next(earliest).ok_or_else(never)?;
    if now < t1 {
        return Ok(r);
    }
    let t2 = sched.next(t1).ok_or_else(never)?;
    if now < t2 {
        r.latest = Some(t1);
        return Ok(r);
    }
    let between = ((t2 - t1).num_milliseconds() + 500) / 1000;
    if between < 1 {
        return Err(never());
    }
    let missed = (now - t1).num_seconds() / between + 1;
    let mut at = sched.next(t1 + TimeDelta::seconds((missed - 2) * between));
    while let Some(x) = at.filter(|x| *x <= now) {
        r.latest = Some(x);
        at = sched.next(x);
    }
    r.missed = if missed > TOO_MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok(r)
}

/// The scheduled time to start now, if one is due, and whether too many were missed.
fn next_schedule_time(
    t: &Times,
    now: DateTime<Utc>,
    sched: &Schedule,
) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    let r = most_recent(t, now, sched, true)?;
    Ok(r.latest
        .filter(|l| *l <= now)
        .map(|l| (l, r.missed == Missed::Many)))
}

/// How long until the next scheduled time after the last one due (kube's
/// `nextScheduleTimeDuration`, with its 100 ms of slack); `None` if it never comes.
fn next_schedule_in(t: &Times, now: DateTime<Utc>, sched: &Schedule) -> Option<Duration> {
    let from = match most_recent(t, now, sched, false) {
        Err(_) => now,
        Ok(Recent {
            latest: Some(l), ..
        }) => l,
        Ok(Recent {
            earliest,
            missed: Missed::None,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    let next = sched.next(from)? + NEXT_SCHEDULE_DELTA;
    Some((next - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[path = "cronjob_tests.rs"]
mod tests;
