//! Reads the Summary API of nodes' agents, all at once, each within [`TIMEOUT`]: a node
//! that does not answer in time (or is not Ready) is left out of the answer, as
//! metrics-server leaves out a kubelet it could not scrape.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;

use crate::proxy::{call_agent, node_endpoint};
use crate::AppState;

/// How long one agent may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest Summary read (a node of thousands of pods stays far below it).
const MAX_SUMMARY: usize = 64 << 20;

fn ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The Summary of each Ready node of `nodes` that answered, by node name.
pub async fn summaries(st: &AppState, nodes: &[Value]) -> HashMap<String, Value> {
    let asks = nodes.iter().filter(|n| ready(n)).filter_map(|n| {
        let name = n["metadata"]["name"].as_str()?.to_string();
        Some(async move {
            match tokio::time::timeout(TIMEOUT, summary(st, n)).await {
                Ok(Ok(s)) => Some((name, s)),
                Ok(Err(e)) => {
                    tracing::warn!(node = %name, error = %e, "reading the node's resource metrics");
                    None
                }
                Err(_) => {
                    tracing::warn!(node = %name, "the node's resource metrics timed out");
                    None
                }
            }
        })
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn summary(st: &AppState, node: &Value) -> anyhow::Result<Value> {
    let (addr, port) = node_endpoint(node).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let resp = call_agent(st, &addr, port, "/stats/summary").await?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_SUMMARY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(serde_json::from_slice(&body)?)
}
