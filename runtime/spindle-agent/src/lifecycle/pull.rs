//! The Pulling phase's work: make a container's image present, with the kubelet's
//! events, using the pod's image pull secrets.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;
use spindle_image::{PullPolicy, PullSecrets, PulledImage};
use spindle_meta::events::{object_ref, EventType};

use crate::reason::Waiting;
use crate::Agent;

/// Make the container's image present, with the events the kubelet records.
pub(super) async fn pull(
    agent: &Agent,
    pod: &Pod,
    c: &Container,
) -> Result<PulledImage, (Waiting, String)> {
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
            Err((Waiting::of_image_error(&e), msg))
        }
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

/// A reference without its tag or digest: `reg:5000/a/b:v1` -> `reg:5000/a/b`.
pub(super) fn repository(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
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
}
