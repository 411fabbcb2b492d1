//! `spindle-hollow` owns hollow nodes: simulated kubelets that register nodes, keep their
//! Leases fresh and play the pod lifecycle without running anything (like KWOK).

/// What `spindle hollow-nodes` was asked for.
#[derive(Clone, Debug)]
pub struct HollowOptions {
    /// API server URL, e.g. https://127.0.0.1:6443
    pub server: String,
    /// Join token (K10<ca-hash>::server:<secret>, as written to <data-dir>/server/token).
    pub token: String,
    pub count: usize,
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

/// Run the hollow nodes until the process ends (being written).
pub async fn run(_opts: HollowOptions) -> anyhow::Result<()> {
    futures::future::pending::<()>().await;
    Ok(())
}
