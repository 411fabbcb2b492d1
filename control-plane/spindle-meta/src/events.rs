//! Events (core/v1) for `kubectl describe`, recorded as Kubernetes' components record
//! them: through client-go's correlator (repeats bump `count`, similar events are combined,
//! a source is throttled per object: see [`correlator`]), and for a node agent at the
//! kubelet's event rate, dropping what its queue cannot hold.

pub mod correlator;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

use correlator::{Correlator, Decision, Draft, TokenBucket};

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

/// Events a recorder holds before it drops new ones (client-go's maxQueuedEvents).
const QUEUE_LEN: usize = 1000;

#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    component: String,
    /// The node a kubelet-like reporter runs on (EventSource.host, reportingInstance).
    host: Option<String>,
    correlator: Mutex<Correlator>,
    /// Writes per second and burst (the kubelet's eventRecordQPS and eventBurst); None
    /// writes as fast as the API server answers.
    rate: Option<(f64, f64)>,
    queue: OnceLock<mpsc::Sender<Pending>>,
}

/// An event waiting in a recorder's queue.
struct Pending {
    regarding: ObjectReference,
    ty: EventType,
    reason: String,
    message: String,
}

/// Tokio's clock, so that tests with paused time drive the correlator and the rate.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
        Self::build(client, component, None, None)
    }

    /// A recorder for a per-node component such as the node agent ("kubelet" on `host`).
    pub fn on_host(client: Client, component: &str, host: &str) -> Self {
        Self::build(client, component, Some(host.to_string()), None)
    }

    /// The same recorder writing at most `qps` events per second (bursts of `burst`)
    /// from a queue of [`QUEUE_LEN`]; events that find the queue full are dropped, as the
    /// kubelet's are.
    pub fn rate_limited(self, qps: f64, burst: u32) -> Self {
        let i = &self.inner;
        Self::build(
            i.client.clone(),
            &i.component,
            i.host.clone(),
            Some((qps, f64::from(burst.max(1)))),
        )
    }

    fn build(
        client: Client,
        component: &str,
        host: Option<String>,
        rate: Option<(f64, f64)>,
    ) -> Self {
        Recorder {
            inner: Arc::new(Inner {
                client,
                component: component.to_string(),
                host,
                correlator: Mutex::default(),
                rate,
                queue: OnceLock::new(),
            }),
        }
    }

    /// Record an event; failures are logged, never fatal to the caller's reconcile. The
    /// event is only queued: one writer per recorder writes them in the order published,
    /// as client-go's broadcaster does. Writing in order is what makes the correlator's
    /// answers hold: a repeat is patched onto the Event its first occurrence created,
    /// which concurrent writers could not promise (the create still in flight, the repeat
    /// would create a second Event).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        ty: EventType,
        reason: &str,
        message: &str,
    ) {
        let p = Pending {
            regarding: regarding.clone(),
            ty,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let tx = self.inner.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE_LEN);
            // The writer holds the recorder's state only: it ends when every Recorder
            // clone (and so the sender) is gone.
            let inner = Arc::downgrade(&self.inner);
            let rate = self.inner.rate;
            tokio::spawn(async move {
                let mut bucket = rate.map(|(qps, burst)| TokenBucket::new(qps, burst, now()));
                while let Some(p) = rx.recv().await {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.record(p, bucket.as_mut()).await;
                }
            });
            tx
        });
        if let Err(mpsc::error::TrySendError::Full(p)) = tx.try_send(p) {
            tracing::debug!(reason = %p.reason, "event queue full; event dropped");
        }
    }
}

impl Inner {
    async fn record(&self, p: Pending, bucket: Option<&mut TokenBucket>) {
        let draft = Draft {
            object: p.regarding.uid.clone().unwrap_or_else(|| {
                format!(
                    "{:?}",
                    (&p.regarding.kind, &p.regarding.namespace, &p.regarding.name)
                )
            }),
            type_: p.ty.as_str(),
            reason: p.reason.clone(),
            message: p.message.clone(),
        };
        let decision = self.lock().correlate(&draft, now());
        let (key, count, message) = match decision {
            Decision::Skip => return,
            Decision::Create { key, message } => (key, 1, message),
            Decision::Patch {
                key,
                count,
                message,
            } => (key, count, message),
        };
        if let Some(b) = bucket {
            let wait = b.take(now());
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
        let prior = self.lock().event(&key);
        let result = match prior {
            Some((name, ns)) if count > 1 => {
                match self.patch(&name, &ns, count, &message).await {
                    Ok(()) => Ok((name, ns)),
                    // Gone (expired or deleted): a new Event carries the count on.
                    Err(_) => self.create(&p, count, &message).await,
                }
            }
            _ => self.create(&p, count, &message).await,
        };
        match result {
            Ok(event) => self.lock().wrote(&key, event),
            Err(e) => {
                tracing::debug!(reason = %p.reason, error = %e, "could not record event");
                self.lock().forget(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Correlator> {
        // The correlator is plain maps: one poisoned by a panicking writer is still usable.
        self.correlator.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn patch(&self, name: &str, ns: &str, count: i32, message: &str) -> kube::Result<()> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let patch = serde_json::json!({"count": count, "lastTimestamp": now, "message": message});
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Create the Event; Ok((name, namespace)).
    async fn create(
        &self,
        p: &Pending,
        count: i32,
        message: &str,
    ) -> kube::Result<(String, String)> {
        let regarding = &p.regarding;
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
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
            reason: Some(p.reason.clone()),
            message: Some(message.to_string()),
            type_: Some(p.ty.as_str().to_string()),
            count: Some(count),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            action: Some(p.reason.clone()),
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
        Ok((name, ns))
    }
}

#[cfg(test)]
mod tests;
