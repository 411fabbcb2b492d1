//! Events (core/v1) for `kubectl describe`, aggregated like Kubernetes' recorder: a
//! repeat of the same reason and message on the same object bumps `count` instead of
//! creating another Event.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Most distinct (object, reason, message) keys remembered for aggregation.
const MAX_KEYS: usize = 4096;

/// (object uid, reason, message) -> (event name, event namespace, count).
type Seen = HashMap<(String, String, String), (String, String, i32)>;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    /// The node a kubelet-like reporter runs on (EventSource.host, reportingInstance).
    host: Option<String>,
    seen: Arc<Mutex<Seen>>,
}

/// An ObjectReference for any typed object.
pub fn object_ref<K>(o: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    o.object_ref(&())
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            host: None,
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A recorder for a per-node component such as the node agent ("kubelet" on `host`).
    pub fn on_host(client: Client, component: &str, host: &str) -> Self {
        Recorder {
            host: Some(host.to_string()),
            ..Recorder::new(client, component)
        }
    }

    /// Record an event; failures are logged, never fatal to the caller's reconcile.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        ty: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_publish(regarding, ty, reason, message).await {
            tracing::debug!(reason, error = %e, "could not record event");
        }
    }

    async fn try_publish(
        &self,
        regarding: &ObjectReference,
        ty: EventType,
        reason: &str,
        message: &str,
    ) -> kube::Result<()> {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let prior = self.seen.lock().await.get(&key).cloned();
        if let Some((name, evns, count)) = prior {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &evns);
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.seen.lock().await.insert(key, (name, evns, count + 1));
                return Ok(());
            }
        }
        let base = regarding.name.clone().unwrap_or_else(|| "object".into());
        // Named as Kubernetes' recorder names them, "<object>.<unix nanos in hex>": a list
        // is in name order, so an object's events list in the order they happened, and
        // `kubectl describe` (which sorts by a timestamp of one-second resolution) keeps
        // that order within a second instead of shuffling the story.
        let nanos = now.0.as_nanosecond();
        let mut name = format!("{base}.{nanos:x}");
        let mut ev = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(ty.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            action: Some(reason.to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            ..Default::default()
        };
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            // Two events for one object in the same nanosecond: the next name is free.
            let kube::Error::Api(s) = &e else {
                return Err(e);
            };
            if s.code != 409 {
                return Err(e);
            }
            name = format!("{base}.{:x}", nanos + 1);
            ev.metadata.name = Some(name.clone());
            api.create(&PostParams::default(), &ev).await?;
        }
        let mut seen = self.seen.lock().await;
        if seen.len() >= MAX_KEYS {
            seen.clear();
        }
        seen.insert(key, (name, ns, 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
