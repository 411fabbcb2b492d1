//! One pod's life on this node, run by one worker task: volumes, init containers in order,
//! then every container under its own supervisor (restart policy, back-off), a status
//! writer that coalesces changes into pods/status patches, and graceful deletion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;
use sha2::{Digest, Sha256};
use spindle_image::{PullPolicy, PullSecrets, PulledImage};
use spindle_logs::{LogWriter, Rotation};
use spindle_meta::events::{object_ref, EventType};
use tokio::sync::{watch, Notify};

use crate::env::{self, Sources};
use crate::podnet::{self, PodNet};
use crate::probes;
use crate::runtime::{ContainerSpec, Exit, Running, Runtime};
use crate::status::{self, CStatus, PodView, RunState, Term};
use crate::volumes::{self, PodVolumes};
use crate::Agent;

/// Kubernetes' container restart back-off: 10 s doubling to 5 min, forgotten after a run
/// of 10 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How long the first status write of a pod waits for its containers to start.
const FIRST_STATUS_GRACE: Duration = Duration::from_millis(20);
/// How often configMap/secret/downwardAPI volumes are re-read (the kubelet re-syncs each
/// minute; a ConfigMap edit shows sooner here).
const VOLUME_REFRESH: Duration = Duration::from_secs(10);
/// How often disk emptyDirs with a sizeLimit are measured (the kubelet's eviction manager
/// looks every 10 s).
const DISK_CHECK: Duration = Duration::from_secs(5);

/// What the agent knows of a pod's containers, shared with the log endpoint.
pub struct Shared {
    pub inits: Vec<CStatus>,
    pub containers: Vec<CStatus>,
    pub initialized: bool,
    pub init_failed: bool,
    /// Why the agent evicted the pod, once it has (as the kubelet's eviction manager).
    pub evicted: Option<String>,
    pub start_time: Timestamp,
    /// The writer of each container's current run, for `logs -f`.
    pub logs: HashMap<String, LogWriter>,
    /// status.podIP, once the pod has a network.
    pub pod_ip: Option<String>,
}

pub struct PodHandle {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub dir: PathBuf,
    pub spec: watch::Sender<Arc<Pod>>,
    /// The pod object is gone from the API (deleted with grace 0, or by us).
    pub gone: AtomicBool,
    /// The pod's network, made when its first networked container starts.
    pub net: tokio::sync::Mutex<Option<Arc<PodNet>>>,
    /// The pod's volume directories, once prepared (for execs).
    pub vols: Mutex<Option<Arc<PodVolumes>>>,
    shared: Mutex<Shared>,
    changed: Notify,
    /// Signalled when the agent evicts the pod.
    evict: Notify,
}

impl PodHandle {
    pub fn new(agent: &Agent, pod: Arc<Pod>) -> Arc<Self> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let prev = pod.status.as_ref();
        let restore =
            |cs: &[Container], prev: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
                cs.iter()
                    .map(|c| {
                        let mut s = CStatus::new(&c.name, c.image.as_deref().unwrap_or_default());
                        // A restarted agent continues the count: the runs before it are gone.
                        if let Some(p) = prev.and_then(|p| p.iter().find(|p| p.name == c.name)) {
                            let ran = p
                                .state
                                .as_ref()
                                .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
                            s.restart_count = p.restart_count + i32::from(ran);
                        }
                        s
                    })
                    .collect::<Vec<_>>()
            };
        let initialized = spec.init_containers.as_ref().is_none_or(|v| v.is_empty())
            || prev.and_then(|p| p.conditions.as_ref()).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            });
        let mut inits = restore(
            spec.init_containers.as_deref().unwrap_or_default(),
            prev.and_then(|p| p.init_container_statuses.as_ref()),
        );
        if initialized {
            // Their work is on disk (volumes survive an agent restart); they are not re-run.
            for (c, p) in inits.iter_mut().zip(
                prev.and_then(|p| p.init_container_statuses.clone())
                    .unwrap_or_default(),
            ) {
                if let Some(t) = p.state.and_then(|s| s.terminated) {
                    c.state = RunState::Terminated(Term {
                        code: t.exit_code,
                        reason: t.reason.unwrap_or_else(|| "Completed".into()),
                        message: t.message,
                        started: t.started_at.map(|t| t.0),
                        finished: t.finished_at.map(|t| t.0).unwrap_or_else(Timestamp::now),
                        container_id: t.container_id,
                        run: c.restart_count.max(1) as u32 - 1,
                    });
                }
            }
        }
        let containers = restore(
            &spec.containers,
            prev.and_then(|p| p.container_statuses.as_ref()),
        );
        let start_time = prev
            .and_then(|p| p.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        Arc::new(PodHandle {
            dir: agent.opts.data_dir.join("pods").join(&uid),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid,
            spec: watch::channel(pod).0,
            gone: AtomicBool::new(false),
            net: tokio::sync::Mutex::new(None),
            vols: Mutex::new(None),
            shared: Mutex::new(Shared {
                inits,
                containers,
                initialized,
                init_failed: false,
                evicted: None,
                start_time,
                logs: HashMap::new(),
                pod_ip: None,
            }),
            changed: Notify::new(),
            evict: Notify::new(),
        })
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log_dir(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(container)
    }

    pub fn pod(&self) -> Arc<Pod> {
        self.spec.borrow().clone()
    }

    fn update(&self, init: bool, name: &str, f: impl FnOnce(&mut CStatus)) {
        {
            let mut sh = self.shared();
            let list = if init {
                &mut sh.inits
            } else {
                &mut sh.containers
            };
            if let Some(c) = list.iter_mut().find(|c| c.name == name) {
                f(c);
            }
        }
        self.changed.notify_one();
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// Wait until the pod is being deleted (or is gone); true if the agent evicted it first.
async fn wait_deleted_or_evicted(h: &PodHandle, rx: &mut watch::Receiver<Arc<Pod>>) -> bool {
    loop {
        let deleting = rx.borrow_and_update().metadata.deletion_timestamp.is_some();
        if deleting || h.gone.load(Ordering::Acquire) {
            return false;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return false },
            () = h.evict.notified() => return true,
        }
    }
}

/// Evict the pod when one of its disk emptyDirs grows past its sizeLimit, checked every
/// [`DISK_CHECK`] as the kubelet's eviction manager does, with its message and event.
async fn watch_disk_limits(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    limits: Vec<volumes::DiskLimit>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if sleep_or_stop(&stop, DISK_CHECK).await {
            return;
        }
        for l in &limits {
            let dir = l.dir.clone();
            let used = tokio::task::spawn_blocking(move || volumes::disk_usage(&dir))
                .await
                .unwrap_or(0);
            if used <= l.bytes {
                continue;
            }
            let msg = format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                l.name, l.quantity
            );
            tracing::info!(pod = %h.name, ns = %h.namespace, used, "{msg}");
            h.shared().evicted = Some(msg.clone());
            let pod = h.pod();
            agent
                .events
                .publish(
                    &object_ref(pod.as_ref()),
                    EventType::Warning,
                    "Evicted",
                    &msg,
                )
                .await;
            h.evict.notify_one();
            return;
        }
    }
}

/// The worker of one pod: run it until it is deleted, then clean up and let it go.
pub async fn run(agent: Arc<Agent>, h: Arc<PodHandle>) {
    let mut rx = h.spec.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write_status_loop(agent.clone(), h.clone()));
    let initial = h.pod();
    let mut pod_task = if is_terminal(&initial) || initial.metadata.deletion_timestamp.is_some() {
        None
    } else {
        Some(tokio::spawn(run_containers(
            agent.clone(),
            h.clone(),
            stop_rx,
        )))
    };
    if wait_deleted_or_evicted(&h, &mut rx).await {
        // Evicted: its runs are stopped as on deletion, the pod reports Failed/Evicted
        // and its disk is freed; the object stays until it is deleted, as on Kubernetes.
        let _ = stop_tx.send(true);
        if let Some(t) = pod_task.take() {
            let grace = grace_period(&h.pod());
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), t).await;
        }
        h.changed.notify_one();
        volumes::teardown(&h.dir);
        wait_deleted_or_evicted(&h, &mut rx).await;
    }
    let pod = h.pod();
    let grace = if h.gone.load(Ordering::Acquire) {
        Duration::ZERO
    } else {
        grace_period(&pod)
    };
    tracing::debug!(pod = %h.name, ns = %h.namespace, ?grace, "stopping pod");
    let _ = stop_tx.send(true);
    if let Some(t) = pod_task {
        // Supervisors stop their runs within the grace period; this bound only guards
        // against a runtime that does not return.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), t).await;
    }
    writer.abort();
    volumes::teardown(&h.dir);
    release_net(&agent, &h).await;
    if !h.gone.load(Ordering::Acquire) {
        let api: Api<Pod> = Api::namespaced(agent.client.clone(), &h.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(h.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&h.name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %h.name, error = %e, "final delete of the pod failed"),
        }
    }
    agent.pods.remove(&h.uid);
}

/// The pod's network, set up on first use (see [`podnet`]).
async fn ensure_net(agent: &Agent, h: &PodHandle, pod: &Pod) -> Result<Arc<PodNet>, String> {
    let mut slot = h.net.lock().await;
    if let Some(net) = slot.as_ref() {
        return Ok(net.clone());
    }
    if agent.stopping.load(Ordering::SeqCst) {
        return Err("the node agent is stopping".into());
    }
    let net = if podnet::is_host_network(pod) {
        PodNet::host(agent.node_ip)
    } else {
        let Some(network) = agent.net.get() else {
            return Err(format!(
                "this node has no pod network: {}",
                agent
                    .net_unavailable
                    .get()
                    .map(String::as_str)
                    .unwrap_or("not set up yet")
            ));
        };
        let names = agent.dns.get().map(|dns| {
            Arc::new(podnet::PodNames::new(
                dns.clone(),
                &h.namespace,
                &agent.opts.net.cluster_domain,
            )) as Arc<dyn spindle_wasm::NameResolver>
        });
        let resolv = match podnet::resolv_conf(
            pod,
            agent.opts.net.cluster_dns,
            &agent.opts.net.cluster_domain,
        ) {
            Some(text) => {
                let path = h.dir.join("resolv.conf");
                std::fs::create_dir_all(&h.dir)
                    .and_then(|()| std::fs::write(&path, text))
                    .map_err(|e| format!("writing the pod's resolv.conf: {e}"))?;
                Some(path)
            }
            None => None,
        };
        podnet::setup(network, pod, agent.pod_workers, names, resolv.as_deref()).await?
    };
    let net = Arc::new(net);
    h.shared().pod_ip = Some(net.ip.to_string());
    h.changed.notify_one();
    *slot = Some(net.clone());
    Ok(net)
}

/// Ends the pod's runtime and removes its sandbox.
async fn release_net(agent: &Agent, h: &PodHandle) {
    let net = h.net.lock().await.take();
    let had_sandbox = net.as_ref().is_some_and(|n| n.sandbox.is_some());
    drop(net);
    if let (true, Some(network)) = (had_sandbox, agent.net.get()) {
        if let Err(e) = network.teardown(&h.uid).await {
            tracing::warn!(pod = %h.name, error = %e, "removing the pod's network failed");
        }
    }
}

/// Volumes, init containers, then all containers under supervisors.
async fn run_containers(agent: Arc<Agent>, h: Arc<PodHandle>, stop: watch::Receiver<bool>) {
    let pod = h.pod();
    let host_ip = agent.node_ip.to_string();
    // Volumes first; a missing ConfigMap keeps the pod in ContainerCreating and is retried.
    let vols = loop {
        let mut src = Sources::new(agent.client.clone(), &h.namespace);
        match volumes::prepare(&pod, &h.dir, &mut src, &host_ip, &agent.host_paths).await {
            Ok(v) => break v,
            Err(e) => {
                set_all_waiting(&h, "ContainerCreating", Some(e.0.clone()));
                agent
                    .events
                    .publish(
                        &object_ref(pod.as_ref()),
                        EventType::Warning,
                        "FailedMount",
                        &format!("MountVolume.SetUp failed: {}", e.0),
                    )
                    .await;
                if sleep_or_stop(&stop, BACKOFF_BASE).await {
                    return;
                }
            }
        }
    };
    let vols = Arc::new(vols);
    *h.vols.lock().unwrap_or_else(|p| p.into_inner()) = Some(vols.clone());
    let limits = volumes::disk_limits(&pod, &vols);
    if !limits.is_empty() {
        tokio::spawn(watch_disk_limits(
            agent.clone(),
            h.clone(),
            limits,
            stop.clone(),
        ));
    }
    if volumes::has_generated(&pod) {
        tokio::spawn(refresh_volumes(
            agent.clone(),
            h.clone(),
            vols.clone(),
            stop.clone(),
        ));
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".to_string());
    let initialized = h.shared().initialized;
    if !initialized {
        set_all_waiting(&h, "PodInitializing", None);
        for c in spec.init_containers.iter().flatten() {
            let ok = supervise(
                agent.clone(),
                h.clone(),
                c.clone(),
                true,
                policy.clone(),
                vols.clone(),
                stop.clone(),
            )
            .await;
            if *stop.borrow() || agent.stopping.load(Ordering::SeqCst) {
                return;
            }
            if !ok {
                h.shared().init_failed = true;
                h.changed.notify_one();
                return;
            }
        }
        h.shared().initialized = true;
    }
    set_all_waiting(&h, "ContainerCreating", None);
    let mut tasks = Vec::new();
    for c in spec.containers.iter() {
        tasks.push(tokio::spawn(supervise(
            agent.clone(),
            h.clone(),
            c.clone(),
            false,
            policy.clone(),
            vols.clone(),
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn set_all_waiting(h: &PodHandle, reason: &str, message: Option<String>) {
    {
        let mut sh = h.shared();
        let inits_done = sh.initialized;
        for c in sh.containers.iter_mut() {
            if matches!(c.state, RunState::Waiting { .. }) {
                c.waiting(reason, message.clone());
            }
        }
        if !inits_done {
            for c in sh.inits.iter_mut() {
                if matches!(c.state, RunState::Waiting { .. }) && reason != "PodInitializing" {
                    c.waiting(reason, message.clone());
                }
            }
        }
    }
    h.changed.notify_one();
}

/// Sleep, unless the pod is stopping first. Returns true if it is stopping.
async fn sleep_or_stop(stop: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
    };
    stopped || *stop.borrow()
}

async fn refresh_volumes(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    vols: Arc<PodVolumes>,
    stop: watch::Receiver<bool>,
) {
    let host_ip = agent.node_ip.to_string();
    while !sleep_or_stop(&stop, VOLUME_REFRESH).await {
        let pod = h.pod();
        let mut src = Sources::new(agent.client.clone(), &h.namespace);
        if let Err(e) = volumes::refresh(&pod, &vols, &mut src, &host_ip).await {
            tracing::debug!(pod = %h.name, error = %e, "refreshing volumes");
        }
    }
}

/// Restart delay before run number `restart` (1-based): the first restart is immediate,
/// then 10 s doubling to 5 min, as the kubelet does.
pub fn backoff(restart: i32) -> Duration {
    if restart <= 1 {
        return Duration::ZERO;
    }
    let exp = (restart - 2).min(10) as u32;
    (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// A reference without its tag or digest: `reg:5000/a/b:v1` -> `reg:5000/a/b`.
fn repository(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    }
}

/// The ID of one run of a container: unique per pod, container and run.
fn run_id(uid: &str, name: &str, run: i32) -> String {
    hex::encode(Sha256::digest(format!("{uid}/{name}/{run}")))
}

/// The runtime for an image: its kind decides (a Wasm artifact runs in wasmtime, a
/// container image in containerd), and a pod's `runtimeClassName` may only narrow that
/// choice to the matching one.
pub(crate) fn pick_runtime(
    agent: &Agent,
    pod: &Pod,
    img: &spindle_image::PulledImage,
) -> Result<Arc<dyn Runtime>, String> {
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref());
    let wasm = img.wasm().is_some();
    match class {
        None | Some("wasm") | Some("runc") | Some("containerd") => {}
        Some(other) => {
            return Err(format!(
                "RuntimeClass {other:?} is not known on this node (it offers wasm{})",
                if agent.containers.is_some() {
                    ", runc"
                } else {
                    ""
                }
            ))
        }
    }
    match (wasm, class) {
        (true, None | Some("wasm")) => Ok(agent.wasm.clone() as Arc<dyn Runtime>),
        (true, Some(c)) => Err(format!(
            "runtimeClassName {c} runs containers, and image {:?} is a Wasm artifact",
            img.image
        )),
        (false, Some("wasm")) => Err(format!(
            "runtimeClassName wasm runs Wasm, and image {:?} is a container image",
            img.image
        )),
        (false, _) => match &agent.containers {
            Some(c) => Ok(Arc::new(crate::containers::ContainerdRuntime(c.clone()))),
            None => Err(format!(
                "image {:?} is a container image and this node has no container runtime (containerd)",
                img.image
            )),
        },
    }
}

async fn pull_secrets(agent: &Agent, pod: &Pod) -> PullSecrets {
    let mut secrets = PullSecrets::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(agent.client.clone(), &ns);
    for r in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
    {
        let Ok(Some(s)) = api.get_opt(&r.name).await else {
            continue;
        };
        let data = s.data.unwrap_or_default();
        if let Some(b) = data.get(".dockerconfigjson") {
            if let Err(e) = secrets.add_dockerconfigjson(&b.0) {
                tracing::warn!(secret = %r.name, error = %e, "bad image pull secret");
            }
        } else if let Some(b) = data.get(".dockercfg") {
            if let Err(e) = secrets.add_dockercfg(&b.0) {
                tracing::warn!(secret = %r.name, error = %e, "bad image pull secret");
            }
        }
    }
    secrets
}

pub(crate) fn limits(c: &Container) -> (Option<u64>, Option<u64>) {
    let l = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let mem = l
        .and_then(|l| l.get("memory"))
        .and_then(|q| env::quantity_f64(&q.0))
        .map(|b| b as u64);
    let cpu = l
        .and_then(|l| l.get("cpu"))
        .and_then(|q| env::quantity_f64(&q.0))
        .map(|c| ((c * 1000.0).ceil() as u64).max(1));
    (mem, cpu)
}

fn requested_cpu(c: &Container) -> Option<u64> {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .and_then(|q| env::quantity_f64(&q.0))
        .map(|c| ((c * 1000.0).ceil() as u64).max(1))
}

/// Run one container until it is done for good (returns whether its last run succeeded)
/// or the pod stops.
async fn supervise(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    c: Container,
    init: bool,
    policy: String,
    vols: Arc<PodVolumes>,
    stop: watch::Receiver<bool>,
) -> bool {
    let pod = h.pod();
    let oref = object_ref(pod.as_ref());
    let image_name = c.image.clone().unwrap_or_default();
    let slot = Slot {
        agent: &agent,
        h: &h,
        init,
        name: &c.name,
        oref: &oref,
        stop: &stop,
    };
    let mut pull_failures = 0i32;
    let mut config_failures = 0i32;
    loop {
        // A stopping agent removes its containers and sandboxes; nothing starts again.
        if *stop.borrow() || agent.stopping.load(Ordering::SeqCst) {
            return false;
        }
        // Image.
        let img = match pull(&agent, &pod, &c).await {
            Ok(img) => {
                pull_failures = 0;
                img
            }
            Err((reason, msg)) => {
                pull_failures += 1;
                let failed = (EventType::Warning, "Failed", format!("Error: {reason}"));
                if reason == "ErrImageNeverPull" || reason == "InvalidImageName" {
                    if slot.hold(reason, msg, failed, BACKOFF_BASE).await {
                        return false;
                    }
                    continue;
                }
                // ErrImagePull for a moment, then ImagePullBackOff until the retry.
                if slot
                    .hold(reason, msg.clone(), failed, Duration::from_secs(1))
                    .await
                {
                    return false;
                }
                let backoff_msg = format!("Back-off pulling image \"{image_name}\": {msg}");
                let event = (
                    EventType::Normal,
                    "BackOff",
                    format!("Back-off pulling image \"{image_name}\""),
                );
                let delay = backoff(pull_failures + 1).max(BACKOFF_BASE);
                if slot
                    .hold("ImagePullBackOff", backoff_msg, event, delay)
                    .await
                {
                    return false;
                }
                continue;
            }
        };
        let runtime = match pick_runtime(&agent, &pod, &img) {
            Ok(r) => r,
            Err(msg) => {
                if slot.create_failed(&mut config_failures, msg).await {
                    return false;
                }
                continue;
            }
        };
        // The pod's network, if this container can use one.
        let net = match runtime.needs_network(&img).await {
            Ok(false) => None,
            Ok(true) => match ensure_net(&agent, &h, &pod).await {
                Ok(net) => Some(net),
                Err(msg) => {
                    let event = (
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {msg}"),
                    );
                    if slot
                        .hold("ContainerCreating", msg, event, BACKOFF_BASE)
                        .await
                    {
                        return false;
                    }
                    continue;
                }
            },
            Err(msg) => {
                if slot.create_failed(&mut config_failures, msg).await {
                    return false;
                }
                continue;
            }
        };
        let pod_ip = net.as_ref().map(|n| n.ip.to_string()).unwrap_or_default();
        let probe_ip = net.as_ref().map(|n| n.ip).unwrap_or(agent.node_ip);
        // Environment, mounts, argv.
        let host_ip = agent.node_ip.to_string();
        let mut src = Sources::new(agent.client.clone(), &h.namespace);
        let built = async {
            let env = env::build(&pod, &c, &mut src, &pod_ip, &host_ip).await?;
            let mounts = volumes::container_mounts(&pod, &c, &vols)?;
            Ok::<_, env::ConfigError>((env, mounts))
        }
        .await;
        let (env_vars, mounts) = match built {
            Ok(v) => {
                config_failures = 0;
                v
            }
            Err(e) => {
                if slot.config_failed(&mut config_failures, e.0).await {
                    return false;
                }
                continue;
            }
        };
        let lookup = |n: &str| {
            env_vars
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let expand = |v: &Option<Vec<String>>| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|a| env::expand(a, &lookup))
                    .collect::<Vec<_>>()
            })
        };
        let (command, args) = (expand(&c.command), expand(&c.args));
        let mut argv: Vec<String> = command.clone().unwrap_or_default();
        if argv.is_empty() {
            argv.push(image_name.clone());
        }
        argv.extend(args.clone().unwrap_or_default());
        let (memory_limit, cpu_millis) = limits(&c);
        let run = {
            let sh = h.shared();
            let list = if init { &sh.inits } else { &sh.containers };
            list.iter()
                .find(|s| s.name == c.name)
                .map(|s| s.restart_count)
                .unwrap_or(0)
        };
        let log_dir = h.log_dir(&c.name);
        let log = match LogWriter::create(&log_dir, run as u32, Rotation::default()) {
            Ok(l) => l,
            Err(e) => {
                h.update(init, &c.name, |s| {
                    s.waiting("CreateContainerError", Some(format!("log file: {e}")))
                });
                if sleep_or_stop(&stop, BACKOFF_BASE).await {
                    return false;
                }
                continue;
            }
        };
        if run >= 2 {
            let _ = spindle_logs::prune(&log_dir, run as u32 - 1);
        }
        let host_network = podnet::is_host_network(&pod);
        let spec = ContainerSpec {
            argv,
            env: env_vars.clone(),
            working_dir: c.working_dir.clone(),
            mounts,
            log: crate::runtime::Output::Log(log.clone()),
            memory_limit,
            cpu_millis,
            ports: c
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .collect(),
            meta: crate::runtime::RunMeta {
                id: run_id(&h.uid, &c.name, run),
                hostname: if host_network {
                    agent.opts.node_name.clone()
                } else {
                    h.name.clone()
                },
                pod_dir: h.dir.clone(),
                pod: format!("{}_{}({})", h.name, h.namespace, h.uid),
                container: c.name.clone(),
                command,
                args,
                security: crate::runtime::Security::of(&pod, &c),
                cpu_request_millis: requested_cpu(&c),
                host_network,
                tty: c.tty == Some(true),
                stdin: c.stdin == Some(true),
                stdin_once: c.stdin_once == Some(true),
            },
            net,
            stdin: None,
            as_command: false,
        };
        let started = Timestamp::now();
        let cid = format!("{}://{}", runtime.name(), spec.meta.id);
        if let Err(msg) = runtime.check(&img, &spec.meta) {
            log.close();
            if slot.config_failed(&mut config_failures, msg).await {
                return false;
            }
            continue;
        }
        let mut running: Box<dyn Running> = match runtime.start(&img, spec).await {
            Ok(r) => r,
            Err(msg) => {
                log.close();
                if slot.create_failed(&mut config_failures, msg).await {
                    return false;
                }
                continue;
            }
        };
        h.shared().logs.insert(c.name.clone(), log.clone());
        let image_id = format!("{}@{}", repository(&img.resolved), img.manifest_digest);
        let probes = if init {
            probes::Probes::default()
        } else {
            probes::Probes::of(&c)
        };
        h.update(init, &c.name, |s| {
            s.state = RunState::Running { started };
            s.container_id = Some(cid.clone());
            s.image_id = image_id.clone();
            s.probe_ready = probes.readiness.as_ref().map(|_| false);
            s.probe_started = probes.startup.as_ref().map(|_| false);
        });
        let events = agent.events.clone();
        let created_ref = oref.clone();
        let cname = c.name.clone();
        tokio::spawn(async move {
            events
                .publish(
                    &created_ref,
                    EventType::Normal,
                    "Created",
                    &format!("Created container: {cname}"),
                )
                .await;
            events
                .publish(
                    &created_ref,
                    EventType::Normal,
                    "Started",
                    &format!("Started container {cname}"),
                )
                .await;
        });
        let began = Instant::now();
        let mut stop_rx = stop.clone();
        let watch_probes = async {
            if probes.is_empty() {
                return std::future::pending().await;
            }
            let target = probes::Target::of(&c, probe_ip, exec_for_probes(&agent, &h, &c.name));
            probes::watch(probes, target, probe_signals(&agent, &h, &oref, &c.name)).await
        };
        let ended = tokio::select! {
            e = running.wait() => Ok(e),
            _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => {
                Err(format!("Stopping container {}", c.name))
            }
            reason = watch_probes => Err(format!("Container {} {reason}", c.name)),
        };
        let exit: Exit = match ended {
            Ok(e) => e,
            Err(why) => {
                agent
                    .events
                    .publish(&oref, EventType::Normal, "Killing", &why)
                    .await;
                running.stop();
                let grace = grace_period(&h.pod());
                match tokio::time::timeout(grace, running.wait()).await {
                    Ok(e) => e,
                    Err(_) => {
                        running.kill();
                        running.wait().await
                    }
                }
            }
        };
        let term = Term {
            code: exit.code,
            reason: exit.reason.clone(),
            message: exit.message.clone(),
            started: Some(started),
            finished: Timestamp::now(),
            container_id: Some(cid.clone()),
            run: run as u32,
        };
        h.update(init, &c.name, |s| {
            s.state = RunState::Terminated(term.clone())
        });
        if exit.reason == "OOMKilled" {
            agent
                .events
                .publish(
                    &oref,
                    EventType::Warning,
                    "OOMKilled",
                    &format!(
                        "Container {} exceeded its memory limit and was killed{}",
                        c.name,
                        exit.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                )
                .await;
        }
        if *stop.borrow() {
            return false;
        }
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => !init || exit.code != 0,
        };
        if !restart {
            return exit.code == 0;
        }
        // Back-off before the next run; a long healthy run forgets earlier crashes.
        let next = run + 1;
        let delay = if began.elapsed() >= BACKOFF_RESET {
            Duration::ZERO
        } else {
            backoff(next)
        };
        if !delay.is_zero() {
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                delay.as_secs(),
                c.name,
                h.name,
                h.namespace,
                h.uid
            );
            h.update(init, &c.name, |s| {
                s.last = Some(term.clone());
                s.waiting("CrashLoopBackOff", Some(msg));
            });
            agent
                .events
                .publish(
                    &oref,
                    EventType::Warning,
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        c.name, h.name, h.namespace, h.uid
                    ),
                )
                .await;
            if sleep_or_stop(&stop, delay).await {
                return false;
            }
        }
        h.update(init, &c.name, |s| {
            s.last = Some(term.clone());
            s.restart_count = next;
        });
    }
}

/// Probe results into the container's status; failures as Unhealthy events.
fn probe_signals(
    agent: &Agent,
    h: &Arc<PodHandle>,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    name: &str,
) -> impl Fn(probes::Signal) + Send + Sync {
    let (h, events, oref, name) = (
        h.clone(),
        agent.events.clone(),
        oref.clone(),
        name.to_string(),
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

/// How exec probes run their command in the container.
fn exec_for_probes(agent: &Arc<Agent>, h: &Arc<PodHandle>, name: &str) -> Option<probes::ExecFn> {
    Some(crate::exec::for_probes(agent, h, name))
}

/// One container's place in its pod, for reporting why it waits.
struct Slot<'a> {
    agent: &'a Agent,
    h: &'a PodHandle,
    init: bool,
    name: &'a str,
    oref: &'a k8s_openapi::api::core::v1::ObjectReference,
    stop: &'a watch::Receiver<bool>,
}

impl Slot<'_> {
    /// Show the container waiting with `reason`, record an event, then sleep `delay`.
    /// Returns true if the pod is stopping.
    async fn hold(
        &self,
        reason: &str,
        message: String,
        event: (EventType, &str, String),
        delay: Duration,
    ) -> bool {
        self.h
            .update(self.init, self.name, |s| s.waiting(reason, Some(message)));
        self.agent
            .events
            .publish(self.oref, event.0, event.1, &event.2)
            .await;
        sleep_or_stop(self.stop, delay).await
    }

    /// The container's config cannot be built or is refused: CreateContainerConfigError,
    /// retried with back-off. Returns true if the pod is stopping.
    async fn config_failed(&self, failures: &mut i32, msg: String) -> bool {
        *failures += 1;
        let event = (EventType::Warning, "Failed", format!("Error: {msg}"));
        let delay = backoff(*failures + 1).max(Duration::from_secs(2));
        self.hold("CreateContainerConfigError", msg, event, delay)
            .await
    }

    /// The container could not be created: CreateContainerError, retried with back-off.
    /// Returns true if the pod is stopping.
    async fn create_failed(&self, failures: &mut i32, msg: String) -> bool {
        *failures += 1;
        let event = (EventType::Warning, "Failed", format!("Error: {msg}"));
        let delay = backoff(*failures + 1).max(BACKOFF_BASE);
        self.hold("CreateContainerError", msg, event, delay).await
    }
}

/// Make the container's image present, with the events the kubelet records.
async fn pull(
    agent: &Agent,
    pod: &Pod,
    c: &Container,
) -> Result<PulledImage, (&'static str, String)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &image);
    let oref = object_ref(pod);
    let cached = agent.images.cached(&image);
    if let (Some(img), PullPolicy::IfNotPresent | PullPolicy::Never) = (&cached, policy) {
        // Off the start path: a cached image must not wait for an API write.
        let events = agent.events.clone();
        tokio::spawn(async move {
            events
                .publish(
                    &oref,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
        });
        return Ok(img.clone());
    }
    agent
        .events
        .publish(
            &oref,
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        )
        .await;
    let secrets = pull_secrets(agent, pod).await;
    let t = Instant::now();
    match agent.images.ensure(&image, policy, &secrets).await {
        Ok(img) => {
            let ms = t.elapsed().as_millis();
            agent
                .events
                .publish(
                    &oref,
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {ms}ms. Image size: {} bytes.",
                        img.size()
                    ),
                )
                .await;
            Ok(img)
        }
        Err(e) => {
            let msg = format!("Failed to pull image \"{image}\": {e}");
            agent
                .events
                .publish(&oref, EventType::Warning, "Failed", &msg)
                .await;
            Err((e.reason(), msg))
        }
    }
}

/// Write the pod's status whenever something changed, coalescing bursts.
async fn write_status_loop(agent: Arc<Agent>, h: Arc<PodHandle>) {
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &h.namespace);
    let host_ip = agent.node_ip.to_string();
    let mut last: Option<serde_json::Value> = None;
    loop {
        h.changed.notified().await;
        if last.is_none() {
            // A cached image starts in about a millisecond: give the first status a moment
            // so ContainerCreating and Running become one write instead of two in a row.
            let _ = tokio::time::timeout(FIRST_STATUS_GRACE, h.changed.notified()).await;
        }
        let pod = h.pod();
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let status: PodStatus = {
            let sh = h.shared();
            status::pod_status(&PodView {
                inits: &sh.inits,
                containers: &sh.containers,
                initialized: sh.initialized,
                restart_policy: &restart_policy,
                start_time: sh.start_time,
                host_ip: &host_ip,
                pod_ip: sh.pod_ip.as_deref(),
                init_failed: sh.init_failed,
                evicted: sh.evicted.as_deref(),
                previous: pod.status.as_ref(),
            })
        };
        let Ok(value) = serde_json::to_value(&status) else {
            continue;
        };
        if last.as_ref() == Some(&value) {
            continue;
        }
        let patch = json!({"status": value});
        match api
            .patch_status(&h.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => last = Some(patch["status"].clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                tracing::debug!(pod = %h.name, error = %e, "writing pod status; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                h.changed.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_drops_tag_and_digest() {
        assert_eq!(repository("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(
            repository("127.0.0.1:5000/a/b@sha256:00"),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(repository("docker.io/library/x"), "docker.io/library/x");
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
