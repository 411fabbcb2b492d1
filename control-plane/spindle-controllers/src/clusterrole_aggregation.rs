//! The ClusterRole aggregation controller (kube-controller-manager's
//! `clusterrole-aggregation`): a ClusterRole with an `aggregationRule` holds the rules of
//! every other ClusterRole its selectors match, in selector order, each selector's roles
//! in name order, without repeats. The bootstrap `admin`, `edit` and `view` roles are
//! filled this way, and grow when a ClusterRole labelled to aggregate into them appears.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use spindle_meta::selector::Matcher;

use crate::runtime::{informer, watch_config, Action, Cache, Queue};

/// The one work item: any change may alter any aggregated role (roles aggregate roles),
/// so every change reconsiders them all, as kube's controller enqueues them all.
const ALL: &str = "all";

/// The rules an aggregating role should hold, from the roles in `roles`.
pub fn aggregated_rules(role: &ClusterRole, roles: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let rule = role.aggregation_rule.as_ref()?;
    let mut sorted: Vec<&Arc<ClusterRole>> = roles.iter().collect();
    sorted.sort_by_key(|r| r.name_any());
    let mut out: Vec<PolicyRule> = Vec::new();
    for sel in rule.cluster_role_selectors.iter().flatten() {
        let m = Matcher::from_label_selector(Some(sel));
        for r in &sorted {
            if r.name_any() == role.name_any() || !m.matches(r.labels()) {
                continue;
            }
            for p in r.rules.iter().flatten() {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
    }
    Some(out)
}

async fn reconcile(client: Client, roles: Arc<Cache<ClusterRole>>) -> Result<Action, kube::Error> {
    let all = roles.list();
    let api: Api<ClusterRole> = Api::all(client);
    for role in &all {
        let Some(want) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.clone().unwrap_or_default() == want {
            continue;
        }
        let patch = serde_json::json!({"rules": want});
        tracing::info!(clusterrole = %role.name_any(), rules = want.len(), "aggregating ClusterRole rules");
        match api
            .patch(
                &role.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::Done)
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    let queue: Arc<Queue<String>> = Queue::new();
    let q = queue.clone();
    let roles = informer(
        Api::<ClusterRole>::all(client.clone()),
        watch_config(),
        None,
        move |_| q.add(ALL.to_string()),
    );
    roles.wait_synced().await;
    queue.add(ALL.to_string());
    queue
        .run(1, "clusterrole-aggregation", move |_| {
            reconcile(client.clone(), roles.clone())
        })
        .await;
    Ok(())
}
