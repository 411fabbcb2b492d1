//! Services and EndpointSlices, list+watched cluster-wide into caches; every change
//! (coalesced over a short window, so a rollout's burst of slice updates makes one
//! snapshot) publishes a new [`Snapshot`].

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch as channel;

use crate::model::{self, Snapshot};

/// How long a change waits for more before the snapshot is rebuilt.
const COALESCE: Duration = Duration::from_millis(50);

/// Whether the cache is complete (its first list is in) after this event.
fn synced<K>(ev: &watcher::Event<K>) -> Option<bool> {
    match ev {
        watcher::Event::Init | watcher::Event::InitApply(_) => None,
        _ => Some(true),
    }
}

fn feed<K>(
    client: Client,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client);
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    (reader, stream)
}

/// Starts the watches; the receiver sees the first snapshot once both caches are
/// complete, then one per (coalesced) change.
pub fn watch(client: Client) -> channel::Receiver<Arc<Snapshot>> {
    let (tx, rx) = channel::channel(Arc::new(Snapshot::default()));
    tokio::spawn(async move {
        let (services, svc_stream) = feed::<Service>(client.clone());
        let (slices, slice_stream) = feed::<EndpointSlice>(client);
        let mut svc_stream = std::pin::pin!(svc_stream);
        let mut slice_stream = std::pin::pin!(slice_stream);
        let (mut svc_ready, mut slices_ready) = (false, false);
        loop {
            let changed = tokio::select! {
                ev = svc_stream.next() => match ev {
                    Some(Ok(ev)) => synced(&ev).inspect(|_| svc_ready = true).is_some(),
                    Some(Err(e)) => { tracing::warn!(error = %e, "Service watch"); false }
                    None => return,
                },
                ev = slice_stream.next() => match ev {
                    Some(Ok(ev)) => synced(&ev).inspect(|_| slices_ready = true).is_some(),
                    Some(Err(e)) => { tracing::warn!(error = %e, "EndpointSlice watch"); false }
                    None => return,
                },
                () = tx.closed() => return,
            };
            if !changed || !svc_ready || !slices_ready {
                continue;
            }
            // Take in whatever else arrives within the window before rebuilding.
            let deadline = tokio::time::Instant::now() + COALESCE;
            loop {
                tokio::select! {
                    Some(ev) = svc_stream.next() => {
                        if let Err(e) = ev { tracing::warn!(error = %e, "Service watch"); }
                    }
                    Some(ev) = slice_stream.next() => {
                        if let Err(e) = ev { tracing::warn!(error = %e, "EndpointSlice watch"); }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            let svcs = services.state();
            let eps = slices.state();
            let snap = model::snapshot(
                svcs.iter().map(|s| s.as_ref()),
                eps.iter().map(|s| s.as_ref()),
            );
            tx.send_if_modified(|cur| {
                if **cur == snap {
                    false
                } else {
                    *cur = Arc::new(snap);
                    true
                }
            });
        }
    });
    rx
}
