//! A DaemonSet's ControllerRevisions: one per template, named `<ds>-<hash>`, whose data is
//! the strategic merge patch that restores the template (what `kubectl rollout undo`
//! applies), numbered in the order the templates were last current, and pruned to
//! `revisionHistoryLimit`, as kube's daemon controller keeps them (`update.go`).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use spindle_meta::selector::Matcher;

use super::util::HASH_LABEL;
use crate::controller_ref::{owner_reference, RefManager};
use crate::deployment::util::{equal_ignore_hash, pod_template_hash};
use crate::runtime::Cache;

/// The patch a revision stores: the whole template, replacing the DaemonSet's.
pub fn patch_of(ds: &DaemonSet) -> Value {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = r.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// Whether a revision holds the DaemonSet's current template.
fn matches(ds: &DaemonSet, r: &ControllerRevision) -> bool {
    match (template_of(r), ds.spec.as_ref()) {
        (Some(t), Some(s)) => equal_ignore_hash(&t, &s.template),
        _ => false,
    }
}

/// The revisions the DaemonSet controls (adopting matching orphans): the current one
/// (created, or renumbered to be the newest) and the others.
pub async fn construct(
    client: &Client,
    revisions: &Cache<ControllerRevision>,
    ds: &DaemonSet,
) -> anyhow::Result<(ControllerRevision, Vec<ControllerRevision>)> {
    let ns = ds.namespace().unwrap_or_default();
    let selector = ds.spec.as_ref().map(|s| &s.selector);
    let matcher = Matcher::for_controller(selector);
    let candidates = revisions
        .by_index(&ns)
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()));
    let owned = RefManager::new(client, ds)
        .claim(candidates, |r: &ControllerRevision| {
            matcher.matches(r.labels())
        })
        .await?;
    let (mut cur, old): (Vec<_>, Vec<_>) = owned.into_iter().partition(|r| matches(ds, r));
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    cur.sort_by_key(|r| std::cmp::Reverse(r.revision));
    // Duplicates of the current template (from a lost race) go; the newest stays.
    for dup in cur.iter().skip(1) {
        delete(&api, dup).await?;
    }
    let cur = match cur.into_iter().next() {
        None => snapshot(client, &api, ds, next).await?,
        Some(r) if r.revision < next => {
            // A rollback to this template makes it the newest revision again.
            let mut r = (*r).clone();
            r.revision = next;
            api.replace(&r.name_any(), &PostParams::default(), &r)
                .await
                .context("renumbering the current revision")?
        }
        Some(r) => (*r).clone(),
    };
    Ok((cur, old.into_iter().map(|r| (*r).clone()).collect()))
}

async fn delete(api: &Api<ControllerRevision>, r: &ControllerRevision) -> anyhow::Result<()> {
    match api.delete(&r.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context("deleting a revision"),
    }
}

/// Create the revision of the current template. A name taken by another template (a
/// hash collision) bumps `status.collisionCount`, so the next pass hashes differently.
async fn snapshot(
    client: &Client,
    api: &Api<ControllerRevision>,
    ds: &DaemonSet,
    revision: i64,
) -> anyhow::Result<ControllerRevision> {
    let spec = ds.spec.as_ref().context("daemonset has no spec")?;
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = pod_template_hash(&spec.template, collisions);
    let name = format!("{}-{hash}", ds.name_any());
    let mut labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash);
    let r = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![owner_reference(ds)]),
            ..Default::default()
        },
        data: Some(RawExtension(patch_of(ds))),
        revision,
    };
    match api.create(&PostParams::default(), &r).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&name).await?;
            if matches(ds, &existing) {
                return Ok(existing);
            }
            let ds_api: Api<DaemonSet> =
                Api::namespaced(client.clone(), &ds.namespace().unwrap_or_default());
            let bumped = collisions.unwrap_or(0) + 1;
            let patch = json!({"status": {"collisionCount": bumped}});
            ds_api
                .patch_status(
                    &ds.name_any(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            anyhow::bail!("revision {name} holds another template; collisionCount is now {bumped}")
        }
        Err(e) => Err(e).context("creating a revision"),
    }
}

/// Delete the oldest revisions beyond `revisionHistoryLimit`, sparing those whose pods
/// still run.
pub async fn cleanup(
    client: &Client,
    ds: &DaemonSet,
    mut old: Vec<ControllerRevision>,
    live_hashes: &HashSet<String>,
) -> anyhow::Result<()> {
    let keep = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut excess = old.len().saturating_sub(keep);
    if excess == 0 {
        return Ok(());
    }
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &ds.namespace().unwrap_or_default());
    old.sort_by_key(|r| r.revision);
    for r in &old {
        if excess == 0 {
            break;
        }
        if r.labels()
            .get(HASH_LABEL)
            .is_some_and(|h| live_hashes.contains(h))
        {
            continue;
        }
        delete(&api, r).await?;
        excess -= 1;
    }
    Ok(())
}

/// The hash of the current revision, which its pods carry.
pub fn hash_of(r: &ControllerRevision) -> String {
    r.labels()
        .get(HASH_LABEL)
        .cloned()
        .unwrap_or_else(|| r.name_any())
}

/// Index of the revision cache: by namespace.
pub fn index(r: &ControllerRevision) -> Vec<String> {
    vec![r.namespace().unwrap_or_default()]
}

/// The controller's cache of revisions, indexed by [`index`].
pub type Revisions = Arc<Cache<ControllerRevision>>;
