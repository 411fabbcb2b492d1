//! Two per-namespace controllers of kube-controller-manager, sharing one namespace
//! informer and queue:
//! - the ServiceAccount controller: every active namespace has the `default`
//!   ServiceAccount (created with the namespace, recreated when deleted);
//! - the root CA publisher: every active namespace has the ConfigMap `kube-root-ca.crt`
//!   whose `ca.crt` is the cluster CA, which pods' token volumes project so in-cluster
//!   clients can verify the API server (restored when deleted or edited).
//!
//! Both caches watch only the one object name they care about per namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::runtime::{informer, watch_config, Action, Cache, Change, Queue};

pub const DEFAULT_ACCOUNT: &str = "default";
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const ROOT_CA_KEY: &str = "ca.crt";
/// The description kube-controller-manager's publisher writes on the ConfigMap.
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Concurrent reconciles (kube-controller-manager's --concurrent-serviceaccount-token-syncs).
const WORKERS: usize = 5;

pub struct Caches {
    namespaces: Arc<Cache<Namespace>>,
    accounts: Arc<Cache<ServiceAccount>>,
    config_maps: Arc<Cache<ConfigMap>>,
}

/// The informers: a namespace is queued when it appears or changes, and when its
/// `default` account or CA ConfigMap goes or changes.
pub fn caches(client: &Client, queue: Arc<Queue<String>>) -> Arc<Caches> {
    let q = queue.clone();
    let namespaces = informer(
        Api::<Namespace>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            if let Change::Upsert { new, .. } = ch {
                if let Some(n) = &new.metadata.name {
                    q.add(n.clone());
                }
            }
        },
    );
    let accounts = informer(
        Api::<ServiceAccount>::all(client.clone()),
        watch_config().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
        None,
        by_namespace::<ServiceAccount>(queue.clone()),
    );
    let config_maps = informer(
        Api::<ConfigMap>::all(client.clone()),
        watch_config().fields(&format!("metadata.name={ROOT_CA_CONFIG_MAP}")),
        None,
        by_namespace::<ConfigMap>(queue),
    );
    Arc::new(Caches {
        namespaces,
        accounts,
        config_maps,
    })
}

/// A handler queueing the namespace of whatever changed.
fn by_namespace<K: kube::Resource>(queue: Arc<Queue<String>>) -> impl Fn(Change<'_, K>) {
    move |ch| {
        let o = match ch {
            Change::Upsert { new, .. } => new,
            Change::Delete(old) => old,
        };
        if let Some(ns) = &o.meta().namespace {
            queue.add(ns.clone());
        }
    }
}

/// The clients of the two controllers: Kubernetes runs them as two identities.
#[derive(Clone)]
pub struct Writers {
    /// The service-account controller's (makes `default`).
    pub accounts: Client,
    /// The root CA publisher's.
    pub root_ca: Client,
}

struct Ctx {
    clients: Writers,
    caches: Arc<Caches>,
    /// The cluster CA (PEM); None leaves the ConfigMaps alone.
    root_ca: Option<String>,
}

/// 409 (made meanwhile) and 403 (the namespace began terminating) end a create quietly.
fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 403 || s.code == 404)
}

async fn reconcile(ctx: Arc<Ctx>, ns: String) -> Result<Action, kube::Error> {
    let Some(namespace) = ctx.caches.namespaces.get(&ns) else {
        return Ok(Action::Done);
    };
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let key = format!("{ns}/{DEFAULT_ACCOUNT}");
    if ctx.caches.accounts.get(&key).is_none() {
        let api: Api<ServiceAccount> = Api::namespaced(ctx.clients.accounts.clone(), &ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_ACCOUNT.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::debug!(namespace = %ns, "created the default ServiceAccount"),
            Err(e) if benign(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(ca) = &ctx.root_ca {
        publish_root_ca(&ctx, &ns, ca).await?;
    }
    Ok(Action::Done)
}

async fn publish_root_ca(ctx: &Ctx, ns: &str, ca: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.clients.root_ca.clone(), ns);
    let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), ca.to_string())]);
    let annotations = BTreeMap::from([(
        "kubernetes.io/description".to_string(),
        ROOT_CA_DESCRIPTION.to_string(),
    )]);
    match ctx
        .caches
        .config_maps
        .get(&format!("{ns}/{ROOT_CA_CONFIG_MAP}"))
    {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIG_MAP.into()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok(()),
                Err(e) if benign(&e) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(cm) if cm.data.as_ref() != Some(&data) || cm.binary_data.is_some() => {
            // Someone edited it: the CA is put back (a conflict retries from the queue).
            let mut fixed = (*cm).clone();
            fixed.data = Some(data);
            fixed.binary_data = None;
            let meta = &mut fixed.metadata;
            meta.annotations
                .get_or_insert_with(Default::default)
                .extend(annotations);
            match api
                .replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &fixed)
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(_) => Ok(()),
    }
}

/// Run both controllers: every namespace once after the first lists, then on changes.
pub async fn run(
    clients: Writers,
    queue: Arc<Queue<String>>,
    caches: Arc<Caches>,
    root_ca: Option<String>,
) -> anyhow::Result<()> {
    caches.namespaces.wait_synced().await;
    caches.accounts.wait_synced().await;
    caches.config_maps.wait_synced().await;
    for n in caches.namespaces.list() {
        if let Some(name) = &n.metadata.name {
            queue.add(name.clone());
        }
    }
    let ctx = Arc::new(Ctx {
        clients,
        caches,
        root_ca,
    });
    queue
        .run(WORKERS, "serviceaccount", move |ns| {
            reconcile(ctx.clone(), ns)
        })
        .await;
    Ok(())
}
