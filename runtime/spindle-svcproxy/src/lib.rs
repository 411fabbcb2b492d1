//! `spindle-svcproxy` is Spindle's kube-proxy: it turns Services and their
//! EndpointSlices into one nftables table on the node, as kube-proxy's nftables mode does,
//! so that a ClusterIP or a NodePort reaches a ready endpoint, chosen at random per
//! connection, from pods and from the node itself.
//!
//! - [`model`]: the [`Snapshot`] of Services with their endpoints that the proxy (and the
//!   node's cluster DNS) work from, built from the API objects.
//! - [`watch`]: list+watch of Services and EndpointSlices, publishing coalesced
//!   snapshots.
//! - [`nft`]: rendering a snapshot into an nftables table and applying it atomically.

pub mod model;
pub mod nft;
pub mod watch;

pub use model::{EndpointView, ServicePortView, ServiceView, Snapshot};
pub use nft::{PodMasquerade, Proxy, ProxyConfig, ProxyError, StaticDnat};

/// Keeps the node's Service rules in step with the cluster until the watch ends: every
/// new snapshot is rendered and applied (a failure is logged and retried with the next
/// snapshot or after a short pause).
pub async fn run(
    proxy: Proxy,
    mut snapshots: tokio::sync::watch::Receiver<std::sync::Arc<Snapshot>>,
) {
    loop {
        let snap = snapshots.borrow_and_update().clone();
        if let Err(e) = proxy.sync(&snap).await {
            tracing::warn!(error = %e, "programming Service rules failed; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
