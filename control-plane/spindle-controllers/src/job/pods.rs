//! The pods of a Job: how one is made from the template (with the tracking finalizer,
//! and for an Indexed Job its index, `JOB_COMPLETION_INDEX` and hostname), and the
//! writes the controller makes to them.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::tracking::{FINALIZER, INDEX_KEY};
use crate::controller_ref::owner_reference;

/// Concurrent pod writes per reconcile.
const WRITE_CONCURRENCY: usize = 64;

/// The pod for `index` (None for a NonIndexed Job), named `name`.
pub fn build(job: &Job, name: &str, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    if let Some(i) = index {
        let ix = i.to_string();
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX_KEY.into(), ix.clone());
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(INDEX_KEY.into(), ix);
        // As Kubernetes does: the index reaches every container through the downward
        // API on the annotation, so it is the one the pod carries.
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            let envs = c.env.get_or_insert_with(Vec::new);
            if !envs.iter().any(|e| e.name == env.name) {
                envs.push(env.clone());
            }
        }
        if spec.hostname.as_deref().is_none_or(str::is_empty) {
            spec.hostname = Some(format!("{}-{i}", job.name_any()));
        }
    }
    meta.name = Some(name.into());
    meta.generate_name = None;
    meta.namespace = job.namespace();
    meta.owner_references = Some(vec![owner_reference(job)]);
    meta.finalizers = Some(vec![FINALIZER.into()]);
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// Create the pods; each result by pod name.
pub async fn create(client: &Client, ns: &str, pods: Vec<Pod>) -> Vec<(String, kube::Result<Pod>)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(pods.into_iter().map(|pod| {
        let api = api.clone();
        async move {
            (
                pod.name_any(),
                api.create(&PostParams::default(), &pod).await,
            )
        }
    }))
    .buffer_unordered(WRITE_CONCURRENCY)
    .collect()
    .await
}

/// (namespace, name, uid) of each pod, owned, for the concurrent writes.
fn targets(pods: &[Arc<Pod>]) -> Vec<(String, String, String)> {
    pods.iter()
        .map(|p| {
            let ns = p.namespace().unwrap_or_default();
            (ns, p.name_any(), p.uid().unwrap_or_default())
        })
        .collect()
}

/// Remove the tracking finalizer from each pod (a strategic merge patch that deletes
/// just that entry, as Kubernetes' controller sends). Returns the uids it is gone from
/// (a pod already gone counts) and the first error.
pub async fn unfinalize(client: &Client, pods: &[Arc<Pod>]) -> (Vec<String>, Option<kube::Error>) {
    let results: Vec<(String, kube::Result<()>)> =
        futures::stream::iter(targets(pods).into_iter().map(|(ns, name, uid)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            async move {
                let patch = json!({"metadata": {
                    "uid": uid,
                    "$deleteFromPrimitiveList/finalizers": [FINALIZER],
                }});
                let r = match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e),
                };
                (uid, r)
            }
        }))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut done = Vec::new();
    let mut failed = None;
    for (uid, r) in results {
        match r {
            Ok(()) => done.push(uid),
            Err(e) => failed = Some(e),
        }
    }
    (done, failed)
}

/// Delete pods the Job no longer wants (kube's deleteJobPods): the finalizer goes
/// first, so a pod the controller stops is neither a success nor a failure. Returns
/// the names deleted and the first error.
pub async fn delete(client: &Client, pods: &[Arc<Pod>]) -> (Vec<String>, Option<kube::Error>) {
    let (_, mut failed) = unfinalize(client, pods).await;
    let results: Vec<(String, kube::Result<()>)> =
        futures::stream::iter(targets(pods).into_iter().map(|(ns, name, uid)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            async move {
                let r = match api.delete(&name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e),
                };
                (name, r)
            }
        }))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut done = Vec::new();
    for (name, r) in results {
        match r {
            Ok(()) => done.push(name),
            Err(e) => failed = Some(e),
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use kube::api::ObjectMeta;

    #[test]
    fn an_indexed_pod_carries_its_index_everywhere_kube_puts_it() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        subdomain: Some("svc".into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        let p = build(&job, "pi-3-abcde", Some(3));
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get(INDEX_KEY).map(String::as_str), Some("3"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(INDEX_KEY).map(String::as_str), Some("3"));
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        assert_eq!(spec.subdomain.as_deref(), Some("svc"));
        let env = &spec.containers[0].env.clone().unwrap_or_default()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        let path = env
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(
            path.as_deref(),
            Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        assert_eq!(p.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
        let owner = &p.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        // A NonIndexed pod has none of it.
        let plain = build(&job, "pi-xyz", None);
        assert!(plain.spec.unwrap_or_default().hostname.is_none());
    }
}
