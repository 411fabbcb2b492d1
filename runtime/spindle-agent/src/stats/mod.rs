//! Resource usage of the node, its pods and their containers, as the kubelet measures it
//! through cAdvisor: a sampler reads every running container's [`Meter`] (the Wasm
//! runtime's own accounting, or the container's cgroup) and the host's counters once per
//! [`WINDOW`], keeps the last two samples, and answers the Summary API
//! (`/stats/summary`, [`summary`]) from them: cumulative CPU time and memory from the
//! latest sample, the CPU rate (`usageNanoCores`) over the window between the two.
//!
//! [`Meter`]: crate::runtime::Meter

pub mod host;
pub mod summary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
pub use spindle_meta::resource_metrics::WINDOW;

use crate::runtime::Usage;
use crate::status::RunState;
use crate::Agent;
use summary::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary};

/// One reading of everything the node runs.
struct Sample {
    at: Instant,
    time: Timestamp,
    node: Option<host::HostUsage>,
    pods: Vec<PodSample>,
}

struct PodSample {
    pod: PodReference,
    start: Timestamp,
    containers: Vec<ContainerSample>,
}

struct ContainerSample {
    name: String,
    start: Timestamp,
    usage: Usage,
}

/// The sample before the last, and the last.
type Pair = (Option<Arc<Sample>>, Option<Arc<Sample>>);

/// The sampler's last two samples.
#[derive(Default)]
pub struct Stats {
    samples: Mutex<Pair>,
}

impl Stats {
    fn push(&self, s: Sample) {
        let mut g = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let last = g.1.take();
        *g = (last, Some(Arc::new(s)));
    }

    fn pair(&self) -> Pair {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Reads every running container of the node, and the node itself.
fn sample(agent: &Agent) -> Sample {
    let pods = agent
        .pods
        .all()
        .into_iter()
        .filter_map(|h| {
            // The meters are read after the pod's lock is let go: a cgroup read is I/O.
            let (start, running) = {
                let sh = h.shared();
                let running: Vec<_> = sh
                    .inits
                    .iter()
                    .chain(&sh.containers)
                    .filter_map(|c| match c.state {
                        RunState::Running { started } => {
                            Some((c.name.clone(), started, sh.meters.get(&c.name)?.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                (sh.start_time, running)
            };
            let containers: Vec<ContainerSample> = running
                .into_iter()
                .filter_map(|(name, start, meter)| {
                    Some(ContainerSample {
                        name,
                        start,
                        usage: meter.sample()?,
                    })
                })
                .collect();
            (!containers.is_empty()).then(|| PodSample {
                pod: PodReference {
                    name: h.name.clone(),
                    namespace: h.namespace.clone(),
                    uid: h.uid.clone(),
                },
                start,
                containers,
            })
        })
        .collect();
    Sample {
        at: Instant::now(),
        time: Timestamp::now(),
        node: host::read(),
        pods,
    }
}

/// Samples the node once per [`WINDOW`] until the agent ends.
pub async fn run(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = sample(&agent);
        agent.stats.push(s);
    }
}

/// Cores used on average between two readings of cumulative CPU time, in billionths; none
/// when the counter went back (a new run) or no time passed.
fn nano_cores(before: Duration, after: Duration, elapsed: Duration) -> Option<u64> {
    let used = after.checked_sub(before)?;
    let elapsed = elapsed.as_nanos();
    (elapsed > 0)
        .then(|| u64::try_from(used.as_nanos() * 1_000_000_000 / elapsed).ok())
        .flatten()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn cpu(time: Timestamp, total: Duration, rate: Option<u64>) -> CpuStats {
    CpuStats {
        time: Time(time),
        usage_nano_cores: rate,
        usage_core_nano_seconds: nanos(total),
    }
}

fn memory(time: Timestamp, u: &Usage, available: Option<u64>) -> MemoryStats {
    MemoryStats {
        time: Time(time),
        available_bytes: available,
        usage_bytes: u.memory_usage,
        working_set_bytes: u.working_set,
    }
}

fn container_stats(
    time: Timestamp,
    c: &ContainerSample,
    before: Option<&ContainerSample>,
    elapsed: Duration,
) -> ContainerStats {
    let rate = before
        .filter(|b| b.start == c.start)
        .and_then(|b| nano_cores(b.usage.cpu, c.usage.cpu, elapsed));
    ContainerStats {
        name: c.name.clone(),
        start_time: Time(c.start),
        cpu: cpu(time, c.usage.cpu, rate),
        memory: memory(time, &c.usage, None),
    }
}

fn pod_stats(
    time: Timestamp,
    p: &PodSample,
    before: Option<&PodSample>,
    elapsed: Duration,
) -> PodStats {
    let containers: Vec<ContainerStats> = p
        .containers
        .iter()
        .map(|c| {
            let b = before.and_then(|b| b.containers.iter().find(|b| b.name == c.name));
            container_stats(time, c, b, elapsed)
        })
        .collect();
    let total: Usage = p.containers.iter().fold(Usage::default(), |a, c| Usage {
        cpu: a.cpu + c.usage.cpu,
        memory_usage: a.memory_usage + c.usage.memory_usage,
        working_set: a.working_set + c.usage.working_set,
    });
    // The pod's rate is its containers' only when each of them has one.
    let rate = containers
        .iter()
        .map(|c| c.cpu.usage_nano_cores)
        .sum::<Option<u64>>();
    PodStats {
        pod_ref: p.pod.clone(),
        start_time: Time(p.start),
        containers,
        cpu: cpu(time, total.cpu, rate),
        memory: memory(time, &total, None),
    }
}

/// The Summary from the latest sample (one taken now if the sampler has none yet).
pub fn summary(agent: &Agent) -> Summary {
    let (before, last) = agent.stats.pair();
    let last = last.unwrap_or_else(|| Arc::new(sample(agent)));
    let before = before.filter(|b| b.at < last.at);
    let elapsed = before
        .as_ref()
        .map_or(Duration::ZERO, |b| last.at.duration_since(b.at));
    let time = last.time;
    let by_uid: HashMap<&str, &PodSample> = before
        .iter()
        .flat_map(|b| b.pods.iter())
        .map(|p| (p.pod.uid.as_str(), p))
        .collect();
    let pods = last
        .pods
        .iter()
        .map(|p| pod_stats(time, p, by_uid.get(p.pod.uid.as_str()).copied(), elapsed))
        .collect();
    let node_usage = last.node.unwrap_or_default();
    let node_rate = before
        .as_ref()
        .and_then(|b| b.node)
        .zip(last.node)
        .and_then(|(b, l)| nano_cores(b.usage.cpu, l.usage.cpu, elapsed));
    let boot = host::boot_time()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(time);
    Summary {
        node: NodeStats {
            node_name: agent.opts.node_name.clone(),
            start_time: Time(boot),
            cpu: cpu(time, node_usage.usage.cpu, node_rate),
            memory: memory(time, &node_usage.usage, last.node.map(|n| n.available)),
        },
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_cpu_time_over_wall_time() {
        let r = nano_cores(
            Duration::from_millis(100),
            Duration::from_millis(1100),
            Duration::from_secs(5),
        );
        assert_eq!(r, Some(200_000_000));
        // A counter that went back belongs to a new run: no rate.
        assert_eq!(
            nano_cores(Duration::from_secs(2), Duration::from_secs(1), WINDOW),
            None
        );
        assert_eq!(
            nano_cores(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            None
        );
    }

    fn container(name: &str, cpu_ms: u64, mem: u64) -> ContainerSample {
        ContainerSample {
            name: name.into(),
            start: Timestamp::UNIX_EPOCH,
            usage: Usage {
                cpu: Duration::from_millis(cpu_ms),
                memory_usage: mem,
                working_set: mem,
            },
        }
    }

    #[test]
    fn pod_adds_up_its_containers() {
        let pod = |a, b| PodSample {
            pod: PodReference {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
            },
            start: Timestamp::UNIX_EPOCH,
            containers: vec![container("a", a, 10), container("b", b, 20)],
        };
        let s = pod_stats(
            Timestamp::UNIX_EPOCH,
            &pod(1000, 0),
            Some(&pod(0, 0)),
            Duration::from_secs(2),
        );
        assert_eq!(s.cpu.usage_nano_cores, Some(500_000_000));
        assert_eq!(s.cpu.usage_core_nano_seconds, 1_000_000_000);
        assert_eq!(s.memory.working_set_bytes, 30);
        assert_eq!(s.containers[1].cpu.usage_nano_cores, Some(0));
        let first = pod_stats(Timestamp::UNIX_EPOCH, &pod(1000, 0), None, Duration::ZERO);
        assert_eq!(first.cpu.usage_nano_cores, None);
        let json = serde_json::to_value(&first).unwrap();
        assert!(json["cpu"].get("usageNanoCores").is_none());
        assert_eq!(json["podRef"]["namespace"], "ns");
        assert_eq!(json["containers"][0]["memory"]["workingSetBytes"], 10);
    }
}
