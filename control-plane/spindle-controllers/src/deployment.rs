//! Deployment controller (being written).

use crate::events::Recorder;

pub async fn run(_client: kube::Client, _recorder: Recorder) -> anyhow::Result<()> {
    futures::future::pending::<()>().await;
    Ok(())
}
