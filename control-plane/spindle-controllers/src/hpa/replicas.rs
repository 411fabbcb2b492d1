//! kube-controller-manager's replica calculator for resource metrics: how many pods a
//! target needs so that its pods' average usage meets the target. Pure arithmetic over
//! the pods and their samples; quantities are in milli-units (millicores, millibytes) as
//! kube's calculator works in `MilliValue`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

/// Ratios within this distance of 1 change nothing (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// A CPU sample taken this soon after a pod started counts only if the pod was ready for
/// a whole sample window (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::minutes(5);
/// A pod not ready within this of its start counts as never ready yet
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY: Duration = Duration::seconds(30);

/// What the calculator needs of one pod of the target.
#[derive(Clone, Debug)]
pub struct PodState {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: whether true, and when it last changed.
    pub ready: Option<(bool, DateTime<Utc>)>,
    pub start_time: Option<DateTime<Utc>>,
    /// The sum of its containers' requests of the resource, or the first container
    /// without one.
    pub request: Result<i64, String>,
}

/// One pod's usage sample from the metrics API.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub milli: i64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

/// What a resource metric proposes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// The pods' average usage over their requests, in percent (Utilization targets).
    pub utilization: Option<i32>,
    /// The pods' average usage, in milli-units.
    pub average_milli: i64,
}

#[derive(Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// `groupPods`: which pods count, which wait for readiness, which have no sample.
fn group(
    pods: &[PodState],
    samples: &BTreeMap<String, Sample>,
    cpu: bool,
    now: DateTime<Utc>,
) -> Groups {
    let mut g = Groups::default();
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            g.ignored.insert(p.name.clone());
            continue;
        }
        if p.phase == "Pending" {
            g.unready.insert(p.name.clone());
            continue;
        }
        let Some(s) = samples.get(&p.name) else {
            g.missing.insert(p.name.clone());
            continue;
        };
        if cpu && cpu_unready(p, s, now) {
            g.unready.insert(p.name.clone());
            continue;
        }
        g.ready += 1;
    }
    g
}

/// A CPU sample is not trusted while a pod warms up: kube skips pods not ready, or
/// ready for less than one sample window, within their first five minutes, and pods
/// that were never ready after that.
fn cpu_unready(p: &PodState, s: &Sample, now: DateTime<Utc>) -> bool {
    let (Some((ready, changed)), Some(start)) = (p.ready, p.start_time) else {
        return true;
    };
    if start + CPU_INITIALIZATION_PERIOD > now {
        !ready || s.timestamp < changed + s.window
    } else {
        !ready && start + INITIAL_READINESS_DELAY > changed
    }
}

/// The ratio of the average of `samples` to `target`, and that average.
fn usage_ratio(samples: &BTreeMap<String, Sample>, target: i64) -> (f64, i64) {
    let n = samples.len().max(1) as i64;
    let average = samples.values().map(|s| s.milli).sum::<i64>() / n;
    (average as f64 / target as f64, average)
}

/// `GetResourceUtilizationRatio`: usage over requests of the pods with samples.
fn utilization_ratio(
    samples: &BTreeMap<String, Sample>,
    requests: &BTreeMap<String, i64>,
    target_percent: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested) = (0i64, 0i64);
    for (name, s) in samples {
        if let Some(r) = requests.get(name) {
            used += s.milli;
            requested += r;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    let average = used / samples.len().max(1) as i64;
    Ok((
        f64::from(utilization) / f64::from(target_percent),
        utilization,
        average,
    ))
}

fn within_tolerance(ratio: f64) -> bool {
    (1.0 - ratio).abs() <= TOLERANCE
}

/// How a target is met: by average utilization of requests, or by average usage.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Utilization(i32),
    AverageMilli(i64),
}

/// `GetResourceReplicas` and `GetRawResourceReplicas`: the replica count that brings
/// the pods' average to `target`.
pub fn resource_replicas(
    current: i32,
    target: Target,
    cpu: bool,
    pods: &[PodState],
    mut samples: BTreeMap<String, Sample>,
    now: DateTime<Utc>,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group(pods, &samples, cpu, now);
    samples.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
    if samples.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = match target {
        Target::Utilization(_) => requests(pods)?,
        Target::AverageMilli(_) => BTreeMap::new(),
    };
    // The ratio of usage to target, over the pods counted so far.
    let ratio_of = |s: &BTreeMap<String, Sample>| -> Result<(f64, Option<i32>, i64), String> {
        match target {
            Target::Utilization(t) => {
                utilization_ratio(s, &requests, t).map(|(r, u, a)| (r, Some(u), a))
            }
            Target::AverageMilli(t) => {
                let (r, a) = usage_ratio(s, t);
                Ok((r, None, a))
            }
        }
    };
    let (ratio, utilization, average_milli) = ratio_of(&samples)?;
    let keep = Proposal {
        replicas: current,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if within_tolerance(ratio) {
            return Ok(keep);
        }
        let replicas = (ratio * g.ready as f64).ceil() as i32;
        return Ok(Proposal { replicas, ..keep });
    }
    // Pods without samples count as at their target on the way down, idle on the way
    // up; unready pods as idle: both damp the change, as kube does.
    for name in &g.missing {
        let assumed = if ratio >= 1.0 {
            0
        } else {
            match target {
                Target::Utilization(t) => {
                    requests.get(name).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
                }
                Target::AverageMilli(t) => t,
            }
        };
        samples.insert(name.clone(), idle_sample(assumed, now));
    }
    if scale_up_with_unready {
        for name in &g.unready {
            samples.insert(name.clone(), idle_sample(0, now));
        }
    }
    let (new_ratio, _, _) = ratio_of(&samples)?;
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if within_tolerance(new_ratio) || flipped {
        return Ok(keep);
    }
    let replicas = (new_ratio * samples.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas, ..keep })
}

fn idle_sample(milli: i64, now: DateTime<Utc>) -> Sample {
    Sample {
        milli,
        timestamp: now,
        window: Duration::zero(),
    }
}

/// `calculatePodRequests`: each pod's request, or kube's error for the first container
/// without one.
fn requests(pods: &[PodState]) -> Result<BTreeMap<String, i64>, String> {
    pods.iter()
        .map(|p| p.request.clone().map(|r| (p.name.clone(), r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, request: i64, now: DateTime<Utc>) -> PodState {
        PodState {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            ready: Some((true, now - Duration::minutes(10))),
            start_time: Some(now - Duration::minutes(10)),
            request: Ok(request),
        }
    }

    fn samples(values: &[(&str, i64)], now: DateTime<Utc>) -> BTreeMap<String, Sample> {
        values
            .iter()
            .map(|(n, v)| {
                let s = Sample {
                    milli: *v,
                    timestamp: now,
                    window: Duration::seconds(15),
                };
                (n.to_string(), s)
            })
            .collect()
    }

    #[test]
    fn busy_pods_ask_for_more_and_idle_ones_for_fewer() {
        let now = Utc::now();
        let pods = [pod("a", 50, now), pod("b", 50, now)];
        // 100 % of a 50m request against a 50 % target: twice the pods.
        let p = resource_replicas(
            2,
            Target::Utilization(50),
            true,
            &pods,
            samples(&[("a", 50), ("b", 50)], now),
            now,
        )
        .expect("proposal");
        assert_eq!(
            p,
            Proposal {
                replicas: 4,
                utilization: Some(100),
                average_milli: 50
            }
        );
        let p = resource_replicas(
            2,
            Target::Utilization(50),
            true,
            &pods,
            samples(&[("a", 5), ("b", 5)], now),
            now,
        )
        .expect("proposal");
        assert_eq!((p.replicas, p.utilization), (1, Some(10)));
    }

    #[test]
    fn within_ten_percent_nothing_changes() {
        let now = Utc::now();
        let pods = [pod("a", 100, now)];
        let s = samples(&[("a", 54)], now);
        let p = resource_replicas(1, Target::Utilization(50), true, &pods, s, now).expect("p");
        assert_eq!((p.replicas, p.utilization), (1, Some(54)));
    }

    #[test]
    fn a_pod_without_a_sample_damps_a_scale_down_and_a_new_pod_waits_for_a_window() {
        let now = Utc::now();
        let pods = [pod("a", 100, now), pod("b", 100, now)];
        // a at 10 % wants 1 pod; b, missing, is taken at 100 %: 55 % is within target.
        let s = samples(&[("a", 10)], now);
        let p = resource_replicas(2, Target::Utilization(50), true, &pods, s, now).expect("p");
        assert_eq!(p.replicas, 2);
        // A pod ready for less than a sample window is unready for CPU.
        let mut fresh = pod("b", 100, now);
        fresh.start_time = Some(now - Duration::seconds(20));
        fresh.ready = Some((true, now - Duration::seconds(5)));
        let pods = [pod("a", 100, now), fresh];
        let s = samples(&[("a", 200), ("b", 200)], now);
        let p = resource_replicas(2, Target::Utilization(50), true, &pods, s, now).expect("p");
        // a alone: 400 % wants 4; b counted idle: 200 % of 2 pods wants 4 as well.
        assert_eq!(p.replicas, 4);
    }

    #[test]
    fn kubes_errors() {
        let now = Utc::now();
        let mut p = pod("a", 0, now);
        p.request = Err("missing request for cpu in container app of Pod a".into());
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            true,
            &[p],
            samples(&[("a", 1)], now),
            now,
        );
        assert_eq!(
            err,
            Err("missing request for cpu in container app of Pod a".into())
        );
        let err = resource_replicas(1, Target::Utilization(50), true, &[], BTreeMap::new(), now);
        assert_eq!(
            err,
            Err("no pods returned by selector while calculating replica count".into())
        );
        let mut pending = pod("a", 1, now);
        pending.phase = "Pending".into();
        let err = resource_replicas(
            1,
            Target::AverageMilli(5),
            false,
            &[pending],
            samples(&[("a", 1)], now),
            now,
        );
        assert_eq!(
            err,
            Err("did not receive metrics for targeted pods (pods might be unready)".into())
        );
    }

    #[test]
    fn average_value_targets_divide_usage_by_the_target() {
        let now = Utc::now();
        let pods = [pod("a", 0, now), pod("b", 0, now)];
        let mib = 1024 * 1024 * 1000;
        let s = samples(&[("a", 90 * mib), ("b", 110 * mib)], now);
        let p =
            resource_replicas(2, Target::AverageMilli(50 * mib), false, &pods, s, now).expect("p");
        assert_eq!(
            p,
            Proposal {
                replicas: 4,
                utilization: None,
                average_milli: 100 * mib
            }
        );
    }
}
