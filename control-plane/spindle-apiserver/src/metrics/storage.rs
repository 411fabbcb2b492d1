//! kube-apiserver's storage latency, `etcd_request_duration_seconds{operation,type}`,
//! for the operations of the [`Store`] (watches are long-lived and not timed, as in
//! kube). `type` is the resource (`pods`, `deployments.apps`), as kube labels it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use spindle_api::Registry;
use spindle_metrics::{
    histogram, histogram_family, HistogramFamily, CONTROL_PLANE, REQUEST_BUCKETS,
};
use spindle_store::{KeyValue, Result, Revision, Store, WatchStream};

type Labels = [(&'static str, String); 2];

fn storage_histogram() -> Histogram {
    histogram(REQUEST_BUCKETS)
}

pub(super) static DURATION: LazyLock<HistogramFamily<Labels>> = LazyLock::new(|| {
    CONTROL_PLANE.register(
        "etcd_request_duration_seconds",
        "Etcd request latency in seconds for each operation and object type",
        histogram_family(storage_histogram),
    )
});

/// The histograms of one resource, one per operation, looked up once.
struct Ops {
    get: Histogram,
    list: Histogram,
    create: Histogram,
    update: Histogram,
    delete: Histogram,
}

impl Ops {
    fn new(resource: &str) -> Ops {
        let h = |op: &'static str| {
            DURATION
                .get_or_create(&[
                    ("operation", op.to_string()),
                    ("type", resource.to_string()),
                ])
                .clone()
        };
        Ops {
            get: h("get"),
            list: h("list"),
            create: h("create"),
            update: h("update"),
            delete: h("delete"),
        }
    }
}

/// A [`Store`] that times every operation on a key of a registered resource.
pub struct InstrumentedStore<S> {
    inner: S,
    /// Key prefix of each resource (`/registry/core/pods/`) to its histograms.
    ops: HashMap<String, Ops>,
}

impl<S: Store> InstrumentedStore<S> {
    pub fn new(inner: S, reg: &Registry) -> Self {
        let ops = reg
            .kinds()
            .iter()
            .map(|k| {
                (
                    crate::rest::key(k, None, None),
                    Ops::new(&k.qualified_plural()),
                )
            })
            .collect();
        InstrumentedStore { inner, ops }
    }

    /// The histograms of the resource a key (or prefix) belongs to: the key's first four
    /// `/`-separated parts.
    fn ops(&self, key: &str) -> Option<&Ops> {
        let end = key.match_indices('/').nth(3).map(|(i, _)| i + 1)?;
        self.ops.get(&key[..end])
    }
}

async fn timed<T>(h: Option<&Histogram>, f: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    if let Some(h) = h {
        h.observe(start.elapsed().as_secs_f64());
    }
    out
}

#[async_trait::async_trait]
impl<S: Store> Store for InstrumentedStore<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        timed(self.ops(key).map(|o| &o.get), self.inner.get(key)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Revision)> {
        let f = self.inner.list_page(prefix, start_after, limit);
        timed(self.ops(prefix).map(|o| &o.list), f).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        timed(
            self.ops(key).map(|o| &o.create),
            self.inner.create(key, value),
        )
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision> {
        let f = self.inner.update(key, value, expected);
        timed(self.ops(key).map(|o| &o.update), f).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        timed(
            self.ops(key).map(|o| &o.delete),
            self.inner.delete(key, expected),
        )
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }
}
