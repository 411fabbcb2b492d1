//! One container's life under its supervisor, as a state machine:
//!
//! ```text
//! Pulling ──> Preparing ──> Running ──> Exited ──> BackingOff ──> Pulling ...
//!    │            │                        └──> Done (restart policy says no)
//!    └────────────┴──> (waiting with a reason, retried after a back-off) ──> Pulling
//! ```
//!
//! Each phase is one function that does its work and names the next phase. Any phase
//! ends in `Done(false)` when the pod stops. Why a container waits is a [`Waiting`]
//! reason, shown in its status and recorded as the kubelet's events.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use spindle_image::PulledImage;
use spindle_logs::{LogWriter, Rotation};
use spindle_meta::events::{object_ref, EventType};
use tokio::sync::watch;

use super::spec::{self, RunParts};
use super::{
    backoff, grace_period, pull, sandbox, sleep_or_stop, PodHandle, BACKOFF_BASE, BACKOFF_RESET,
};
use crate::podnet::PodNet;
use crate::probes;
use crate::reason::{ExitReason, RuntimeError, Waiting};
use crate::runtime::{Exit, Output, Running, Runtime};
use crate::status::{RunState, Term};
use crate::volumes::PodVolumes;
use crate::Agent;

/// Where a container's supervisor is.
enum Phase {
    /// Making the image present.
    Pulling,
    /// Choosing the runtime, making the sandbox, building the spec, starting the run.
    Preparing(PulledImage),
    /// The run is going: waiting for it to end, for the pod to stop, or for a probe
    /// to fail.
    Running(Box<Started>),
    /// The run ended: record it and apply the restart policy.
    Exited(Ended),
    /// Waiting out the restart back-off before run number `next`.
    BackingOff {
        last: Term,
        next: i32,
        delay: Duration,
    },
    /// Done for good: whether the last run succeeded.
    Done(bool),
}

/// A run that started.
struct Started {
    running: Box<dyn Running>,
    run: i32,
    started: Timestamp,
    began: Instant,
    container_id: String,
    probes: probes::Probes,
    probe_ip: IpAddr,
}

/// A run that ended.
struct Ended {
    exit: Exit,
    run: i32,
    started: Timestamp,
    began: Instant,
    container_id: String,
}

/// One container of a pod and what its supervisor remembers between phases.
pub(super) struct Supervisor {
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    pod: Arc<Pod>,
    c: Container,
    init: bool,
    policy: String,
    vols: Arc<PodVolumes>,
    stop: watch::Receiver<bool>,
    oref: ObjectReference,
    /// Failed pulls in a row (the pull back-off).
    pull_failures: i32,
    /// Failed creations in a row (the CreateContainer(Config)Error back-off).
    create_failures: i32,
}

/// Run one container until it is done for good (returns whether its last run succeeded)
/// or the pod stops.
pub(super) async fn supervise(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    c: Container,
    init: bool,
    policy: String,
    vols: Arc<PodVolumes>,
    stop: watch::Receiver<bool>,
) -> bool {
    let pod = h.pod();
    let mut s = Supervisor {
        oref: object_ref(pod.as_ref()),
        agent,
        h,
        pod,
        c,
        init,
        policy,
        vols,
        stop,
        pull_failures: 0,
        create_failures: 0,
    };
    let mut phase = Phase::Pulling;
    loop {
        phase = match phase {
            Phase::Pulling => s.pulling().await,
            Phase::Preparing(img) => s.preparing(img).await,
            Phase::Running(started) => s.running(*started).await,
            Phase::Exited(ended) => s.exited(ended).await,
            Phase::BackingOff { last, next, delay } => s.backing_off(last, next, delay).await,
            Phase::Done(ok) => return ok,
        }
    }
}

impl Supervisor {
    fn stopping(&self) -> bool {
        // A stopping agent removes its containers and sandboxes; nothing starts again.
        *self.stop.borrow() || self.agent.stopping.load(Ordering::SeqCst)
    }

    /// The next phase after a wait: the pod stopped, or try again from the image.
    fn retry(stopped: bool) -> Phase {
        if stopped {
            Phase::Done(false)
        } else {
            Phase::Pulling
        }
    }

    /// Show the container waiting with `reason`, record an event, sleep `delay`, retry.
    async fn hold(
        &self,
        reason: Waiting,
        message: String,
        event: (EventType, &str, String),
        delay: Duration,
    ) -> Phase {
        self.h.update(self.init, &self.c.name, |s| {
            s.waiting(reason, Some(message))
        });
        self.agent
            .events
            .publish(&self.oref, event.0, event.1, &event.2)
            .await;
        Self::retry(sleep_or_stop(&self.stop, delay).await)
    }

    /// The container could not be created, or its config is refused: its reason
    /// (CreateContainerError, CreateContainerConfigError), retried with back-off.
    async fn failed(&mut self, e: RuntimeError) -> Phase {
        self.create_failures += 1;
        let floor = match e.reason {
            Waiting::CreateContainerConfigError => Duration::from_secs(2),
            _ => BACKOFF_BASE,
        };
        let delay = backoff(self.create_failures + 1).max(floor);
        let event = (
            EventType::Warning,
            "Failed",
            format!("Error: {}", e.message),
        );
        self.hold(e.reason, e.message, event, delay).await
    }

    async fn pulling(&mut self) -> Phase {
        if self.stopping() {
            return Phase::Done(false);
        }
        let (reason, msg) = match pull::pull(&self.agent, &self.pod, &self.c).await {
            Ok(img) => {
                self.pull_failures = 0;
                return Phase::Preparing(img);
            }
            Err(e) => e,
        };
        self.pull_failures += 1;
        let failed = (EventType::Warning, "Failed", format!("Error: {reason}"));
        if matches!(
            reason,
            Waiting::ErrImageNeverPull | Waiting::InvalidImageName
        ) {
            return self.hold(reason, msg, failed, BACKOFF_BASE).await;
        }
        // ErrImagePull for a moment, then ImagePullBackOff until the retry.
        if let Phase::Done(ok) = self
            .hold(reason, msg.clone(), failed, Duration::from_secs(1))
            .await
        {
            return Phase::Done(ok);
        }
        let image = self.c.image.clone().unwrap_or_default();
        let backoff_msg = format!("Back-off pulling image \"{image}\": {msg}");
        let event = (
            EventType::Normal,
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
        );
        let delay = backoff(self.pull_failures + 1).max(BACKOFF_BASE);
        self.hold(Waiting::ImagePullBackOff, backoff_msg, event, delay)
            .await
    }

    async fn preparing(&mut self, img: PulledImage) -> Phase {
        let runtime = match sandbox::pick_runtime(&self.agent, &self.pod, &img) {
            Ok(r) => r,
            Err(e) => return self.failed(e).await,
        };
        let net = match self.sandbox(runtime.as_ref(), &img).await {
            Ok(net) => net,
            Err(next) => return next,
        };
        let pod_ip = net.as_ref().map(|n| n.ip.to_string()).unwrap_or_default();
        let probe_ip = net.as_ref().map(|n| n.ip).unwrap_or(self.agent.node_ip);
        let built = spec::env_and_mounts(
            &self.agent,
            &self.h,
            &self.pod,
            &self.c,
            &self.vols,
            &pod_ip,
        )
        .await;
        let (env, mounts) = match built {
            Ok(v) => {
                self.create_failures = 0;
                v
            }
            Err(e) => return self.failed(RuntimeError::config(e.0)).await,
        };
        let run = self.run_number();
        let log = match self.log(run).await {
            Ok(log) => log,
            Err(next) => return next,
        };
        let parts = RunParts {
            run,
            env,
            mounts,
            log: Output::Log(log.clone()),
            net,
        };
        let spec = spec::for_run(&self.agent, &self.h, &self.pod, &self.c, parts);
        let started = Timestamp::now();
        let container_id = format!("{}://{}", runtime.name(), spec.meta.id);
        let checked = runtime.check(&img, &spec.meta);
        let running = match checked {
            Ok(()) => runtime.start(&img, spec).await,
            Err(e) => Err(e),
        };
        let running = match running {
            Ok(r) => r,
            Err(e) => {
                log.close();
                return self.failed(e).await;
            }
        };
        let probes = if self.init {
            probes::Probes::default()
        } else {
            probes::Probes::of(&self.c)
        };
        let started = Started {
            running,
            run,
            started,
            began: Instant::now(),
            container_id,
            probes,
            probe_ip,
        };
        self.record_start(&started, &img, log);
        Phase::Running(Box::new(started))
    }

    /// The pod's network, if this container can use one.
    async fn sandbox(
        &mut self,
        runtime: &dyn Runtime,
        img: &PulledImage,
    ) -> Result<Option<Arc<PodNet>>, Phase> {
        match runtime.needs_network(img).await {
            Ok(false) => Ok(None),
            Ok(true) => match sandbox::ensure_net(&self.agent, &self.h, &self.pod).await {
                Ok(net) => Ok(Some(net)),
                Err(msg) => {
                    let event = (
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {msg}"),
                    );
                    Err(self
                        .hold(Waiting::ContainerCreating, msg, event, BACKOFF_BASE)
                        .await)
                }
            },
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Which run of the container comes next (its restart count).
    fn run_number(&self) -> i32 {
        let sh = self.h.shared();
        let list = if self.init { &sh.inits } else { &sh.containers };
        list.iter()
            .find(|s| s.name == self.c.name)
            .map(|s| s.restart_count)
            .unwrap_or(0)
    }

    /// The log file of run `run`; the logs of runs before the previous one go.
    async fn log(&self, run: i32) -> Result<LogWriter, Phase> {
        let log_dir = self.h.log_dir(&self.c.name);
        match LogWriter::create(&log_dir, run as u32, Rotation::default()) {
            Ok(l) => {
                if run >= 2 {
                    let _ = spindle_logs::prune(&log_dir, run as u32 - 1);
                }
                Ok(l)
            }
            Err(e) => {
                self.h.update(self.init, &self.c.name, |s| {
                    s.waiting(
                        Waiting::CreateContainerError,
                        Some(format!("log file: {e}")),
                    )
                });
                Err(Self::retry(sleep_or_stop(&self.stop, BACKOFF_BASE).await))
            }
        }
    }

    /// The container runs: its status, log and console for the endpoint, the
    /// kubelet's Created and Started events (off the start path).
    fn record_start(&self, s: &Started, img: &PulledImage, log: LogWriter) {
        {
            let mut sh = self.h.shared();
            sh.logs.insert(self.c.name.clone(), log);
            sh.consoles.insert(self.c.name.clone(), s.running.console());
            sh.meters.insert(self.c.name.clone(), s.running.meter());
        }
        let image_id = format!(
            "{}@{}",
            pull::repository(&img.resolved),
            img.manifest_digest
        );
        self.h.update(self.init, &self.c.name, |st| {
            st.state = RunState::Running { started: s.started };
            st.container_id = Some(s.container_id.clone());
            st.image_id = image_id;
            st.probe_ready = s.probes.readiness.as_ref().map(|_| false);
            st.probe_started = s.probes.startup.as_ref().map(|_| false);
        });
        let (events, oref, name) = (
            self.agent.events.clone(),
            self.oref.clone(),
            self.c.name.clone(),
        );
        tokio::spawn(async move {
            events
                .publish(
                    &oref,
                    EventType::Normal,
                    "Created",
                    &format!("Created container: {name}"),
                )
                .await;
            events
                .publish(
                    &oref,
                    EventType::Normal,
                    "Started",
                    &format!("Started container {name}"),
                )
                .await;
        });
    }

    /// Wait for the run to end; stop it (grace period, then kill) when the pod stops or
    /// a liveness or startup probe fails.
    async fn running(&mut self, s: Started) -> Phase {
        let Started {
            mut running,
            run,
            started,
            began,
            container_id,
            probes,
            probe_ip,
        } = s;
        let name = self.c.name.clone();
        let mut stop_rx = self.stop.clone();
        let watch_probes = async {
            if probes.is_empty() {
                return std::future::pending().await;
            }
            let exec = crate::exec::for_probes(&self.agent, &self.h, &name);
            let target = probes::Target::of(&self.c, probe_ip, Some(exec));
            probes::watch(probes, target, self.probe_signals()).await
        };
        let ended = tokio::select! {
            e = running.wait() => Ok(e),
            _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => {
                Err(format!("Stopping container {name}"))
            }
            reason = watch_probes => Err(format!("Container {name} {reason}")),
        };
        let exit = match ended {
            Ok(e) => e,
            Err(why) => {
                self.agent
                    .events
                    .publish(&self.oref, EventType::Normal, "Killing", &why)
                    .await;
                running.stop();
                let grace = grace_period(&self.h.pod());
                match tokio::time::timeout(grace, running.wait()).await {
                    Ok(e) => e,
                    Err(_) => {
                        running.kill();
                        running.wait().await
                    }
                }
            }
        };
        {
            let mut sh = self.h.shared();
            sh.consoles.remove(&name);
            sh.meters.remove(&name);
        }
        Phase::Exited(Ended {
            exit,
            run,
            started,
            began,
            container_id,
        })
    }

    /// Record how the run ended and apply the restart policy.
    async fn exited(&mut self, e: Ended) -> Phase {
        let Ended {
            exit,
            run,
            started,
            began,
            container_id,
        } = e;
        let term = Term {
            code: exit.code,
            reason: exit.reason,
            message: exit.message.clone(),
            started: Some(started),
            finished: Timestamp::now(),
            container_id: Some(container_id),
            run: run as u32,
        };
        self.h.update(self.init, &self.c.name, |s| {
            s.state = RunState::Terminated(term.clone())
        });
        if exit.reason == ExitReason::OOMKilled {
            let detail = exit
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            self.agent
                .events
                .publish(
                    &self.oref,
                    EventType::Warning,
                    "OOMKilled",
                    &format!(
                        "Container {} exceeded its memory limit and was killed{detail}",
                        self.c.name
                    ),
                )
                .await;
        }
        if *self.stop.borrow() {
            return Phase::Done(false);
        }
        let restart = match self.policy.as_str() {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => !self.init || exit.code != 0,
        };
        if !restart {
            return Phase::Done(exit.code == 0);
        }
        // A long healthy run forgets earlier crashes.
        let next = run + 1;
        let delay = if began.elapsed() >= BACKOFF_RESET {
            Duration::ZERO
        } else {
            backoff(next)
        };
        Phase::BackingOff {
            last: term,
            next,
            delay,
        }
    }

    /// CrashLoopBackOff for `delay` (none after a first crash or a long run), then the
    /// next run.
    async fn backing_off(&mut self, last: Term, next: i32, delay: Duration) -> Phase {
        if !delay.is_zero() {
            let h = &self.h;
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                delay.as_secs(),
                self.c.name,
                h.name,
                h.namespace,
                h.uid
            );
            h.update(self.init, &self.c.name, |s| {
                s.last = Some(last.clone());
                s.waiting(Waiting::CrashLoopBackOff, Some(msg));
            });
            self.agent
                .events
                .publish(
                    &self.oref,
                    EventType::Warning,
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        self.c.name, h.name, h.namespace, h.uid
                    ),
                )
                .await;
            if sleep_or_stop(&self.stop, delay).await {
                return Phase::Done(false);
            }
        }
        self.h.update(self.init, &self.c.name, |s| {
            s.last = Some(last);
            s.restart_count = next;
        });
        Phase::Pulling
    }

    /// Probe results into the container's status; failures as Unhealthy events.
    fn probe_signals(&self) -> impl Fn(probes::Signal) + Send + Sync {
        let (h, events, oref, name) = (
            self.h.clone(),
            self.agent.events.clone(),
            self.oref.clone(),
            self.c.name.clone(),
        );
        move |signal| match signal {
            probes::Signal::Started => h.update(false, &name, |s| s.probe_started = Some(true)),
            probes::Signal::Ready(ready) => h.update(false, &name, |s| s.probe_ready = Some(ready)),
            probes::Signal::Unhealthy { probe, message } => {
                let (events, oref) = (events.clone(), oref.clone());
                tokio::spawn(async move {
                    events
                        .publish(
                            &oref,
                            EventType::Warning,
                            "Unhealthy",
                            &format!("{probe} probe failed: {message}"),
                        )
                        .await;
                });
            }
        }
    }
}
