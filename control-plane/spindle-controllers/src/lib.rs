//! `spindle-controllers` owns the control loops of the control plane: each is a reconcile
//! function over caches fed by list+watch (kube-runtime's watcher → store → work queue
//! with back-off → reconcile), talking to the API server through the same REST path as
//! any client (in-process, see `AppState::in_process_client`).

pub mod bootstrap;
pub mod certificates;
pub mod clusterrole_aggregation;
pub mod controller_ref;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod ephemeral;
pub mod history;
pub mod hpa;
pub mod job;
pub mod local_path;
pub mod nodelifecycle;
pub mod replicas;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod runtime;
pub mod serviceaccount;
pub mod serviceaccount_token;
pub mod statefulset;
pub mod ttlafterfinished;
pub mod volume;
pub mod workqueue_metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;

use replicas::ReplicaKind;

/// Settings of the controller manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// A node whose Lease is older than this is NotReady (Kubernetes: 40 s).
    pub node_monitor_grace_period: Duration,
    /// Default toleration of node.kubernetes.io/{not-ready,unreachable}:NoExecute added to
    /// pods (Kubernetes: 300 s).
    pub default_not_ready_toleration: Duration,
    /// The horizontal pod autoscaler's flags.
    pub hpa: hpa::Settings,
    /// The cluster CA (PEM) the root CA publisher puts in every namespace's
    /// `kube-root-ca.crt`; None publishes nothing.
    pub root_ca: Option<String>,
    /// The CA the CSR signer signs with; None: approved requests wait for another signer.
    pub signing: Option<certificates::Signing>,
    /// Signs legacy ServiceAccount tokens for the token controller; None leaves token
    /// Secrets unfilled.
    pub legacy_tokens: Option<serviceaccount_token::Signer>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_monitor_grace_period: Duration::from_secs(40),
            default_not_ready_toleration: Duration::from_secs(300),
            hpa: hpa::Settings::default(),
            root_ca: None,
            signing: None,
            legacy_tokens: None,
        }
    }
}

/// The identity each controller works under, as kube-controller-manager's
/// `--use-service-account-credentials` names them: ServiceAccounts in `kube-system`, each
/// holding the bootstrap ClusterRole `system:controller:<name>`.
pub mod identity {
    pub const CLUSTERROLE_AGGREGATION: &str = "clusterrole-aggregation-controller";
    pub const CRONJOB: &str = "cronjob-controller";
    pub const DAEMONSET: &str = "daemon-set-controller";
    pub const DEPLOYMENT: &str = "deployment-controller";
    pub const DISRUPTION: &str = "disruption-controller";
    pub const ENDPOINT: &str = "endpoint-controller";
    pub const ENDPOINTSLICE: &str = "endpointslice-controller";
    pub const EPHEMERAL_VOLUME: &str = "ephemeral-volume-controller";
    pub const HORIZONTAL_POD_AUTOSCALER: &str = "horizontal-pod-autoscaler";
    pub const JOB: &str = "job-controller";
    /// Spindle's own: the built-in local-path provisioner (k3s runs its as
    /// `local-path-provisioner-service-account`).
    pub const LOCAL_PATH_PROVISIONER: &str = "local-path-provisioner";
    pub const NODE: &str = "node-controller";
    pub const PERSISTENT_VOLUME_BINDER: &str = "persistent-volume-binder";
    pub const REPLICASET: &str = "replicaset-controller";
    pub const REPLICATION: &str = "replication-controller";
    pub const RESOURCE_QUOTA: &str = "resourcequota-controller";
    pub const ROOT_CA_CERT_PUBLISHER: &str = "root-ca-cert-publisher";
    pub const SERVICE_ACCOUNT: &str = "service-account-controller";
    pub const STATEFULSET: &str = "statefulset-controller";
    pub const TTL_AFTER_FINISHED: &str = "ttl-after-finished-controller";
    pub const CERTIFICATE: &str = "certificate-controller";
    /// The namespace of their ServiceAccounts.
    pub const NAMESPACE: &str = "kube-system";

    pub const ALL: &[&str] = &[
        CLUSTERROLE_AGGREGATION,
        CRONJOB,
        DAEMONSET,
        DEPLOYMENT,
        DISRUPTION,
        ENDPOINT,
        ENDPOINTSLICE,
        EPHEMERAL_VOLUME,
        HORIZONTAL_POD_AUTOSCALER,
        JOB,
        LOCAL_PATH_PROVISIONER,
        NODE,
        PERSISTENT_VOLUME_BINDER,
        REPLICASET,
        REPLICATION,
        RESOURCE_QUOTA,
        ROOT_CA_CERT_PUBLISHER,
        SERVICE_ACCOUNT,
        STATEFULSET,
        TTL_AFTER_FINISHED,
        CERTIFICATE,
    ];
}

/// Start every controller, each in its own task under [`supervise`]; runs for ever.
/// The shared informers list and watch through `informers` (the controller manager's own
/// identity); each controller reads and writes through `client_for(<its identity>)`
/// (see [`identity`]), and records its events with that client too.
pub async fn run_all<F>(informers: kube::Client, client_for: F, opts: Options) -> anyhow::Result<()>
where
    F: Fn(&str) -> kube::Client,
{
    workqueue_metrics::register();
    let client = &informers;
    // One pod cache for every controller: at tens of thousands of pods a copy per
    // controller is most of the control plane's memory.
    let rs_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let rc_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let ep_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let pdb_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let ds_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let services = endpoints::services(client, ep_queue.clone());
    let budgets = disruption::budgets(client, pdb_queue.clone());
    let rss = replicas::owners::<ReplicaSet>(client, rs_queue.clone());
    let rcs = replicas::owners::<ReplicationController>(client, rc_queue.clone());
    let (rsq, rcq) = (rs_queue.clone(), rc_queue.clone());
    let (rsc, rcc) = (rss.clone(), rcs.clone());
    let (eq, svcs) = (ep_queue.clone(), services.clone());
    let (dq, pdbs) = (pdb_queue.clone(), budgets.clone());
    let dsq = ds_queue.clone();
    let sts_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let (sets, stsq) = (
        statefulset::sets(client, sts_queue.clone()),
        sts_queue.clone(),
    );
    let sts_cache = sets.clone();
    let eph_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let ephq = eph_queue.clone();
    let job_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let (jobs, jq) = (job::jobs(client, job_queue.clone()), job_queue.clone());
    let volume_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let provision_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let (volumes, vq) = (
        volume::caches(client, volume_queue.clone(), provision_queue.clone()),
        volume_queue.clone(),
    );
    let provisioned = volumes.clone();
    let quota_queue: Arc<runtime::Queue<String>> = runtime::Queue::new();
    let quotas = resourcequota::quotas(client, quota_queue.clone());
    let (qq, quota_cache) = (quota_queue.clone(), quotas.clone());
    let pods = runtime::informer(
        kube::Api::<k8s_openapi::api::core::v1::Pod>::all(informers.clone()),
        runtime::watch_config(),
        Some(Box::new(replicaset::pod_index)),
        move |ch| {
            runtime::contain("endpoints", || endpoints::on_pod_change(&eq, &svcs, &ch));
            runtime::contain("disruption", || disruption::on_pod_change(&dq, &pdbs, &ch));
            runtime::contain("daemonset", || daemonset::on_pod_change(&dsq, &ch));
            runtime::contain("replicaset", || replicas::on_pod_change(&rsq, &rsc, &ch));
            runtime::contain("replicationcontroller", || {
                replicas::on_pod_change(&rcq, &rcc, &ch)
            });
            runtime::contain("job", || job::on_pod_change(&jq, &ch));
            runtime::contain("statefulset", || {
                statefulset::on_pod_change(&stsq, &sts_cache, &ch)
            });
            runtime::contain("ephemeral-volume", || ephemeral::on_pod_change(&ephq, &ch));
            runtime::contain("volume", || volume::on_pod_change(&vq, &ch));
            runtime::contain("resourcequota", || {
                resourcequota::on_pod_change(&qq, &quota_cache, &ch)
            });
        },
    );
    let recorder = |c: &kube::Client, name| spindle_meta::events::Recorder::new(c.clone(), name);
    let (c, p) = (client_for(identity::DEPLOYMENT), pods.clone());
    let deployment = supervise("deployment", move || {
        deployment::run(c.clone(), recorder(&c, "deployment-controller"), p.clone())
    });
    let (c, p) = (client_for(identity::REPLICASET), pods.clone());
    let replicaset = supervise("replicaset", move || {
        let events = recorder(&c, ReplicaSet::COMPONENT);
        replicas::run(c.clone(), events, rs_queue.clone(), rss.clone(), p.clone())
    });
    let (c, p) = (client_for(identity::REPLICATION), pods.clone());
    let replicationcontroller = supervise("replicationcontroller", move || {
        let events = recorder(&c, ReplicationController::COMPONENT);
        replicas::run(c.clone(), events, rc_queue.clone(), rcs.clone(), p.clone())
    });
    let writers = endpoints::Writers {
        endpoints: client_for(identity::ENDPOINT),
        slices: client_for(identity::ENDPOINTSLICE),
    };
    let p = pods.clone();
    let endpoints = supervise("endpoints", move || {
        endpoints::run(
            writers.clone(),
            ep_queue.clone(),
            services.clone(),
            p.clone(),
        )
    });
    let (c, p) = (client_for(identity::DISRUPTION), pods.clone());
    let disruption = supervise("disruption", move || {
        let events = recorder(&c, "controllermanager");
        disruption::run(
            c.clone(),
            events,
            pdb_queue.clone(),
            budgets.clone(),
            p.clone(),
        )
    });
    let (c, ttl_queue) = (
        client_for(identity::TTL_AFTER_FINISHED),
        runtime::Queue::new(),
    );
    let ttl_jobs = ttlafterfinished::jobs(client, ttl_queue.clone());
    let ttl = supervise("ttl-after-finished", move || {
        ttlafterfinished::run(c.clone(), ttl_queue.clone(), ttl_jobs.clone())
    });
    let (c, p) = (client_for(identity::DAEMONSET), pods.clone());
    let daemonsets = supervise("daemonset", move || {
        let events = recorder(&c, daemonset::COMPONENT);
        daemonset::run(c.clone(), events, ds_queue.clone(), p.clone())
    });
    let (c, p) = (client_for(identity::JOB), pods.clone());
    let job = supervise("job", move || {
        let events = recorder(&c, job::COMPONENT);
        job::run(
            c.clone(),
            events,
            job_queue.clone(),
            jobs.clone(),
            p.clone(),
        )
    });
    let (c, p) = (client_for(identity::STATEFULSET), pods.clone());
    let statefulsets = supervise("statefulset", move || {
        let events = recorder(&c, statefulset::COMPONENT);
        statefulset::run(
            c.clone(),
            events,
            sts_queue.clone(),
            sets.clone(),
            p.clone(),
        )
    });
    let (c, p) = (client_for(identity::EPHEMERAL_VOLUME), pods.clone());
    let ephemeral = supervise("ephemeral-volume", move || {
        let events = recorder(&c, ephemeral::COMPONENT);
        ephemeral::run(c.clone(), events, eph_queue.clone(), p.clone())
    });
    let (c, p) = (client_for(identity::PERSISTENT_VOLUME_BINDER), pods.clone());
    let binder = supervise("persistentvolume-binder", move || {
        let events = recorder(&c, volume::COMPONENT);
        volume::run(
            c.clone(),
            events,
            volume_queue.clone(),
            volumes.clone(),
            p.clone(),
        )
    });
    let (c, v) = (client_for(identity::LOCAL_PATH_PROVISIONER), provisioned);
    let local_path = supervise("local-path-provisioner", move || {
        let events = recorder(&c, local_path::COMPONENT);
        local_path::run(c.clone(), events, provision_queue.clone(), v.clone())
    });
    let c = client_for(identity::RESOURCE_QUOTA);
    let resourcequota = supervise("resourcequota", move || {
        resourcequota::run(c.clone(), quota_queue.clone(), quotas.clone())
    });
    let (c, hpa_queue) = (
        client_for(identity::HORIZONTAL_POD_AUTOSCALER),
        runtime::Queue::new(),
    );
    let hpa_cache = hpa::hpas(client, hpa_queue.clone());
    let hpa_settings = opts.hpa;
    let hpa = supervise("horizontalpodautoscaling", move || {
        let events = recorder(&c, hpa::COMPONENT);
        hpa::run(
            c.clone(),
            events,
            hpa_queue.clone(),
            hpa_cache.clone(),
            hpa_settings,
        )
    });
    let sa_queue = runtime::Queue::new();
    let sa_caches = serviceaccount::caches(client, sa_queue.clone());
    let sa_writers = serviceaccount::Writers {
        accounts: client_for(identity::SERVICE_ACCOUNT),
        root_ca: client_for(identity::ROOT_CA_CERT_PUBLISHER),
    };
    let root_ca = opts.root_ca.clone();
    let serviceaccounts = supervise("serviceaccount", move || {
        serviceaccount::run(
            sa_writers.clone(),
            sa_queue.clone(),
            sa_caches.clone(),
            root_ca.clone(),
        )
    });
    let c = client_for(identity::CRONJOB);
    let cronjob = supervise("cronjob", move || {
        cronjob::run(c.clone(), recorder(&c, "cronjob-controller"))
    });
    let (c, signing) = (client_for(identity::CERTIFICATE), opts.signing.clone());
    let csrs = supervise("certificates", move || {
        certificates::run(c.clone(), signing.clone())
    });
    let c = client_for(identity::CLUSTERROLE_AGGREGATION);
    let aggregation = supervise("clusterrole-aggregation", move || {
        clusterrole_aggregation::run(c.clone())
    });
    // Kubernetes runs the token controller as the controller manager itself.
    let tokens = opts.legacy_tokens.clone().map(|sign| {
        let (c, queue) = (informers.clone(), runtime::Queue::new());
        let caches = serviceaccount_token::caches(&c, queue.clone());
        let root_ca = opts.root_ca.clone();
        supervise("serviceaccount-token", move || {
            serviceaccount_token::run(
                c.clone(),
                queue.clone(),
                caches.clone(),
                root_ca.clone(),
                sign.clone(),
            )
        })
    });
    let tokens = async move {
        if let Some(t) = tokens {
            t.await
        }
    };
    let c = client_for(identity::NODE);
    let leases = nodelifecycle::leases(client, &c);
    let nodes = supervise("node-lifecycle", move || {
        let events = recorder(&c, "node-controller");
        nodelifecycle::run(
            c.clone(),
            events,
            opts.clone(),
            pods.clone(),
            leases.clone(),
        )
    });
    let accounts = ensure_service_accounts(informers.clone());

    tokio::join!(
        deployment,
        replicaset,
        replicationcontroller,
        endpoints,
        disruption,
        daemonsets,
        nodes,
        job,
        cronjob,
        ttl,
        csrs,
        statefulsets,
        ephemeral,
        binder,
        local_path,
        resourcequota,
        hpa,
        aggregation,
        serviceaccounts,
        accounts,
        tokens
    );
    Ok(())
}

/// The controllers' ServiceAccounts in `kube-system`, made once when missing, as
/// kube-controller-manager makes them for its service-account credentials (the
/// identities work without them; the objects show who the controllers are).
async fn ensure_service_accounts(client: kube::Client) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client, identity::NAMESPACE);
    let mut pending: Vec<&str> = identity::ALL.to_vec();
    let mut pause = RESTART_PAUSE_MIN;
    while !pending.is_empty() {
        let mut left = Vec::new();
        for name in pending {
            let sa = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&kube::api::PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    tracing::debug!(account = name, error = %e, "creating a controller's ServiceAccount");
                    left.push(name);
                }
            }
        }
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESTART_PAUSE_MAX);
        }
    }
}

/// Run the controller (or scheduler) `start` makes in a task of its own, for ever: when it fails or
/// panics it is logged and started again (after a pause growing from 1 s to 30 s while
/// it keeps failing), as Kubernetes' controller manager recovers a panicking controller
/// instead of losing it. One controller's bug must not stop the others, nor itself for good.
pub async fn supervise<F, Fut>(name: &'static str, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut pause = RESTART_PAUSE_MIN;
    loop {
        let started = Instant::now();
        match tokio::spawn(start()).await {
            Ok(Ok(())) => tracing::warn!(controller = name, "controller returned; restarting"),
            Ok(Err(e)) => tracing::error!(
                controller = name,
                error = format!("{e:#}"),
                "controller failed; restarting"
            ),
            Err(e) if e.is_panic() => tracing::error!(
                controller = name,
                panic = runtime::panic_message(e.into_panic().as_ref()),
                "controller panicked; restarting"
            ),
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
        if started.elapsed() > RESTART_PAUSE_MAX * 2 {
            pause = RESTART_PAUSE_MIN;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESTART_PAUSE_MAX);
    }
}

const RESTART_PAUSE_MIN: Duration = Duration::from_secs(1);
const RESTART_PAUSE_MAX: Duration = Duration::from_secs(30);
