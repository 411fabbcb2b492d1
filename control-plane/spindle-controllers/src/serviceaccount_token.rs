//! The token controller (kube-controller-manager's serviceaccount-token controller),
//! for legacy token Secrets only when someone asks for one: a Secret of type
//! `kubernetes.io/service-account-token` naming a ServiceAccount in the annotation
//! `kubernetes.io/service-account.name` gets `token` (a non-expiring JWT the API server
//! signs, see `spindle_apiserver::sa_legacy`), `ca.crt` and `namespace`, and the
//! account's uid in `kubernetes.io/service-account.uid`. A Secret whose account is gone
//! (or was replaced: another uid) is deleted, as Kubernetes does. Nothing makes such
//! Secrets unasked (Kubernetes 1.24 on).
//!
//! Like Kubernetes' it works as the controller manager's own identity, whose bootstrap
//! role reads ServiceAccounts and Secrets and updates and deletes Secrets.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};

pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// Concurrent reconciles (kube-controller-manager's --concurrent-serviceaccount-token-syncs).
const WORKERS: usize = 5;

/// What a legacy token is made for.
pub struct TokenFor<'a> {
    pub namespace: &'a str,
    pub secret: &'a str,
    pub account: &'a str,
    pub account_uid: &'a str,
}

/// Signs a legacy token: the API server's key stays with the API server, the controller
/// gets only this capability (`Options::legacy_tokens`).
#[derive(Clone)]
pub struct Signer(pub Arc<SignFn>);

pub type SignFn = dyn Fn(&TokenFor<'_>) -> anyhow::Result<String> + Send + Sync;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

/// The informers: token Secrets, queued by themselves, and ServiceAccounts, queuing the
/// token Secrets that name them.
pub struct Caches {
    secrets: Arc<Cache<Secret>>,
    accounts: Arc<Cache<ServiceAccount>>,
}

fn account_of(s: &Secret) -> Option<&str> {
    s.annotations().get(NAME_ANNOTATION).map(String::as_str)
}

fn by_account(s: &Secret) -> Vec<String> {
    let ns = s.namespace().unwrap_or_default();
    account_of(s)
        .map(|a| vec![format!("{ns}/{a}")])
        .unwrap_or_default()
}

pub fn caches(client: &Client, queue: Arc<Queue<String>>) -> Arc<Caches> {
    let q = queue.clone();
    let secrets = informer(
        Api::<Secret>::all(client.clone()),
        watch_config().fields(&format!("type={TOKEN_TYPE}")),
        Some(Box::new(by_account)),
        move |ch| {
            if let Change::Upsert { new, .. } = ch {
                q.add(key_of(new.as_ref()));
            }
        },
    );
    let cache = secrets.clone();
    let accounts = informer(
        Api::<ServiceAccount>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            for sa in ch.states() {
                for s in cache.by_index(&key_of(sa.as_ref())) {
                    queue.add(key_of(s.as_ref()));
                }
            }
        },
    );
    Arc::new(Caches { secrets, accounts })
}

struct Ctx {
    client: Client,
    caches: Arc<Caches>,
    root_ca: Option<String>,
    sign: Signer,
}

fn has(data: &BTreeMap<String, ByteString>, key: &str) -> bool {
    data.get(key).is_some_and(|v| !v.0.is_empty())
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    let Some(secret) = ctx.caches.secrets.get(&key) else {
        return Ok(Action::Done);
    };
    if secret.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let (ns, name) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(account_name) = account_of(&secret) else {
        return Ok(Action::Done);
    };
    let wanted_uid = secret.annotations().get(UID_ANNOTATION).cloned();
    let cached = ctx.caches.accounts.get(&format!("{ns}/{account_name}"));
    let matches = |sa: &ServiceAccount| {
        wanted_uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || sa.metadata.uid.as_deref() == Some(u))
    };
    let account = match cached.filter(|sa| matches(sa)) {
        Some(sa) => sa,
        None => {
            // Confirm with a fresh read before deleting: the cache may lag a new account.
            let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
            match api.get_opt(account_name).await? {
                Some(sa) if matches(&sa) => Arc::new(sa),
                _ => {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: secret.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    tracing::info!(secret = %key, account = account_name, "deleting the token Secret of a ServiceAccount that is gone");
                    return match secrets.delete(name, &dp).await {
                        Ok(_) => Ok(Action::Done),
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                            Ok(Action::Done)
                        }
                        Err(e) => Err(e),
                    };
                }
            }
        }
    };
    let uid = account.metadata.uid.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let ca_missing = ctx.root_ca.is_some() && !has(&data, "ca.crt");
    let complete = has(&data, "token")
        && has(&data, "namespace")
        && !ca_missing
        && wanted_uid.as_deref() == Some(uid.as_str());
    if complete {
        return Ok(Action::Done);
    }
    let mut next = (*secret).clone();
    let data = next.data.get_or_insert_with(BTreeMap::new);
    if !has(data, "token") {
        let token = (ctx.sign.0)(&TokenFor {
            namespace: ns,
            secret: name,
            account: account_name,
            account_uid: &uid,
        });
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(secret = %key, error = %e, "signing a legacy ServiceAccount token");
                return Ok(Action::RequeueAfter(std::time::Duration::from_secs(10)));
            }
        };
        data.insert("token".into(), ByteString(token.into_bytes()));
    }
    if let Some(ca) = &ctx.root_ca {
        data.entry("ca.crt".into())
            .or_insert_with(|| ByteString(ca.clone().into_bytes()));
    }
    data.insert("namespace".into(), ByteString(ns.as_bytes().to_vec()));
    next.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(UID_ANNOTATION.into(), uid);
    // An update, not a patch: a conflict (someone else wrote meanwhile) retries from the
    // queue against the newer Secret, so a token is never written over another.
    match secrets.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

/// Run the controller: every token Secret once after the first lists, then on changes.
pub async fn run(
    client: Client,
    queue: Arc<Queue<String>>,
    caches: Arc<Caches>,
    root_ca: Option<String>,
    sign: Signer,
) -> anyhow::Result<()> {
    caches.secrets.wait_synced().await;
    caches.accounts.wait_synced().await;
    for s in caches.secrets.list() {
        queue.add(key_of(s.as_ref()));
    }
    let ctx = Arc::new(Ctx {
        client,
        caches,
        root_ca,
        sign,
    });
    queue
        .run(WORKERS, "serviceaccount-token", move |key| {
            reconcile(ctx.clone(), key)
        })
        .await;
    Ok(())
}
