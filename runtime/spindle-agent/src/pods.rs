//! The pods bound to this node: one watch (field selector `spec.nodeName`) feeding one
//! worker per pod uid, so a pod's updates (deletion above all) reach the task running it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;

use crate::lifecycle::{self, PodHandle};
use crate::{volumes, Agent};

/// Live pod workers by uid, and by namespace/name for the log endpoint.
#[derive(Default)]
pub struct PodTable {
    by_uid: Mutex<HashMap<String, Arc<PodHandle>>>,
}

impl PodTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PodHandle>>> {
        self.by_uid.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, uid: &str) -> Option<Arc<PodHandle>> {
        self.lock().get(uid).cloned()
    }

    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<PodHandle>> {
        self.lock()
            .values()
            .find(|h| h.namespace == namespace && h.name == name && !h.gone.load(Ordering::Relaxed))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<PodHandle>> {
        self.lock().values().cloned().collect()
    }

    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

fn on_pod(agent: &Arc<Agent>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    if let Some(h) = agent.pods.get(&uid) {
        h.spec.send_replace(pod);
        return;
    }
    let h = PodHandle::new(agent, pod);
    agent.pods.lock().insert(uid, h.clone());
    tokio::spawn(lifecycle::run(agent.clone(), h));
}

fn on_gone(agent: &Arc<Agent>, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    if let Some(h) = agent.pods.get(uid) {
        h.gone.store(true, Ordering::Release);
        h.spec.send_replace(Arc::new(pod.clone()));
    }
}

/// Pod directories left by pods this node no longer has (deleted while the agent was
/// down) are torn down once the first full list has arrived.
fn remove_orphans(agent: &Agent, live: &HashSet<String>) {
    let root = agent.paths.pods();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for e in entries.flatten() {
        let uid = e.file_name().to_string_lossy().to_string();
        if !live.contains(&uid) {
            tracing::info!(uid, "removing the directory of a pod that no longer exists");
            volumes::teardown(&e.path());
        }
    }
}

/// Sandboxes of pods this node no longer has.
async fn remove_orphan_sandboxes(agent: &Agent, live: &HashSet<String>) {
    let Some(net) = agent.net.get() else {
        return;
    };
    for uid in net.list().await {
        if !live.contains(&uid) {
            tracing::info!(uid, "removing the network of a pod that no longer exists");
            if let Err(e) = net.teardown(&uid).await {
                tracing::warn!(uid, error = %e, "removing an orphaned pod network");
            }
        }
    }
}

pub async fn run(agent: Arc<Agent>) -> Result<()> {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.opts.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let mut initial: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => initial = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(p)) => {
                if let (Some(set), Some(uid)) = (initial.as_mut(), p.metadata.uid.as_ref()) {
                    set.insert(uid.clone());
                }
                on_pod(&agent, p);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(set) = initial.take() {
                    // Workers of pods deleted while the watch was down stop too.
                    let stale: Vec<Arc<PodHandle>> = agent
                        .pods
                        .lock()
                        .values()
                        .filter(|h| !set.contains(&h.uid))
                        .cloned()
                        .collect();
                    for h in stale {
                        let pod = h.spec.borrow().clone();
                        on_gone(&agent, &pod);
                    }
                    let mut live = set;
                    live.extend(agent.pods.lock().keys().cloned());
                    remove_orphans(&agent, &live);
                    remove_orphan_sandboxes(&agent, &live).await;
                }
            }
            Ok(watcher::Event::Apply(p)) => on_pod(&agent, p),
            Ok(watcher::Event::Delete(p)) => on_gone(&agent, &p),
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
}
