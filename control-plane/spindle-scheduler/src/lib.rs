//! `spindle-scheduler` owns pod placement: it watches pending pods and nodes, filters and
//! scores nodes as kube-scheduler does, and binds pods through `pods/binding`.

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Name pods ask for in spec.schedulerName.
    pub scheduler_name: String,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            scheduler_name: "default-scheduler".into(),
        }
    }
}

/// Run the scheduler until the process ends (being written).
pub async fn run(_client: kube::Client, _opts: SchedulerOptions) -> anyhow::Result<()> {
    futures::future::pending::<()>().await;
    Ok(())
}
