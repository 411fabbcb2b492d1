//! Host-gw routing between nodes: every other Node's pod CIDR is routed via that node's
//! InternalIP, so pods on different nodes reach each other directly (the nodes must
//! share an L2 network, as with flannel's host-gw backend).
//!
//! Routes are changed with iproute2's `ip route`, like the CNI plugins and
//! flannel do it: one short command per change, and the routing table stays readable with
//! the same tool. Each route carries this agent's protocol number so that it is never
//! confused with routes someone else made; the set this agent installed is kept in its
//! data dir so that an agent restarted after a node went away removes the stale route.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;

use crate::Agent;

/// The `proto` of our routes (`ip route show proto 152`); any unused number above the
/// kernel's own works, this one is unassigned in /etc/iproute2/rt_protos.
const ROUTE_PROTO: &str = "152";

/// Desired routes: pod CIDR → next hop, for every other node that has both.
fn desired(nodes: &[Arc<Node>], me: &str) -> BTreeMap<String, IpAddr> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr = n
                .spec
                .as_ref()?
                .pod_cidr
                .clone()
                .filter(|c| !c.is_empty())?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((cidr, ip))
        })
        .collect()
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running ip {args:?}: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Installed {
    path: PathBuf,
    routes: BTreeMap<String, IpAddr>,
}

impl Installed {
    fn load(path: PathBuf) -> Self {
        let routes = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Installed { path, routes }
    }

    fn save(&self) {
        if let Ok(b) = serde_json::to_vec(&self.routes) {
            let tmp = self.path.with_extension("tmp");
            if std::fs::write(&tmp, b).is_ok() {
                let _ = std::fs::rename(&tmp, &self.path);
            }
        }
    }

    async fn sync(&mut self, want: &BTreeMap<String, IpAddr>) {
        let stale: BTreeSet<String> = self
            .routes
            .keys()
            .filter(|c| !want.contains_key(*c))
            .cloned()
            .collect();
        for cidr in stale {
            match ip(&["route", "del", &cidr, "proto", ROUTE_PROTO]).await {
                Ok(()) => tracing::info!(%cidr, "removed the route of a node that went away"),
                Err(e) => tracing::debug!(%cidr, error = %e, "route already gone"),
            }
            self.routes.remove(&cidr);
        }
        for (cidr, via) in want {
            if self.routes.get(cidr) == Some(via) {
                continue;
            }
            let via_s = via.to_string();
            match ip(&[
                "route",
                "replace",
                cidr,
                "via",
                &via_s,
                "proto",
                ROUTE_PROTO,
            ])
            .await
            {
                Ok(()) => {
                    tracing::info!(%cidr, via = %via_s, "routing another node's pods");
                    self.routes.insert(cidr.clone(), *via);
                }
                Err(e) => tracing::warn!(%cidr, via = %via_s, error = %e, "adding a pod route"),
            }
        }
        self.save();
    }

    /// Removes every route this agent installed (agent stop).
    async fn clear(&mut self) {
        self.sync(&BTreeMap::new()).await;
    }
}

/// Keeps this node's routes to the other nodes' pods in step with the Nodes.
pub async fn run(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut installed = Installed::load(agent.paths.routes());
    let (reader, writer) = reflector::store();
    let api: Api<Node> = Api::all(agent.client.clone());
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                // The store is complete from InitDone on; changes after that.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => {
                    // Coalesce a burst of Node updates (heartbeats) into one sync.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let nodes = reader.state();
                    let want = desired(&nodes, &agent.opts.node_name);
                    let mut cidrs: Vec<ipnet::Ipv4Net> = nodes
                        .iter()
                        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
                        .collect();
                    cidrs.sort();
                    agent.node_cidrs.send_if_modified(|cur| {
                        let changed = *cur != cidrs;
                        *cur = cidrs;
                        changed
                    });
                    tracing::debug!(nodes = reader.state().len(), routes = want.len(), "routes sync");
                    installed.sync(&want).await;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "node watch for routes"),
                None => return,
            },
            stopped = async { stop.wait_for(|s| *s).await.is_ok() } => {
                if stopped {
                    installed.clear().await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": ip.map(|ip| vec![
                    serde_json::json!({"type": "Hostname", "address": name}),
                    serde_json::json!({"type": "InternalIP", "address": ip}),
                ]).unwrap_or_default()},
            }))
            .expect("node"),
        )
    }

    #[test]
    fn routes_go_to_every_other_node_with_a_cidr_and_an_address() {
        let nodes = vec![
            node("a", Some("10.42.0.0/24"), Some("192.0.2.1")),
            node("b", Some("10.42.1.0/24"), Some("192.0.2.2")),
            node("c", None, Some("192.0.2.3")),
            node("d", Some("10.42.3.0/24"), None),
        ];
        let want = desired(&nodes, "a");
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            vec![("10.42.1.0/24".to_string(), "192.0.2.2".parse().expect("ip"))]
        );
    }
}
