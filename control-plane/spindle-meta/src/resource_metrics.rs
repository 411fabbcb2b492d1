//! What the node agents and the API server agree on about resource metrics.

use std::time::Duration;

/// How often an agent samples its containers' usage, and so the window its CPU rates
/// (`usageNanoCores`) are averaged over: the `window` the metrics API reports. Shorter
/// than metrics-server's 15 s resolution, so a new pod shows in `kubectl top` soon.
pub const WINDOW: Duration = Duration::from_secs(5);
