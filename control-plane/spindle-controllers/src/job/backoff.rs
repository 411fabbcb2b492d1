//! The pause before a Job replaces a failed pod: 10 s after the first failure since the
//! last success, doubling with each further one, at most 10 minutes
//! (kube-controller-manager's DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff).
//! It is worked out from the Job's pods themselves, so it survives a restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

pub const BASE: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(600);

/// The pause after `failures` failures in a row (none after none).
pub fn delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (failures - 1).min(16);
    BASE.saturating_mul(factor as u32).min(MAX)
}

/// When the pod finished: the latest container end, else its last status change.
pub fn finished_at(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref()?;
    let ends = st
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    ends.or_else(|| {
        st.conditions
            .iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
    })
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// How long pod creation must still wait, given the Job's pods: the failures counted
/// are those that ended after the latest success.
pub fn remaining<'a>(pods: impl Iterator<Item = &'a Pod>, now: Timestamp) -> Duration {
    let mut last_success: Option<Timestamp> = None;
    let mut failures: Vec<Timestamp> = Vec::new();
    for p in pods {
        match phase(p) {
            Some("Succeeded") => last_success = last_success.max(finished_at(p)),
            Some("Failed") => failures.push(finished_at(p).unwrap_or(now)),
            _ => {}
        }
    }
    let recent: Vec<Timestamp> = failures
        .into_iter()
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last) = recent.iter().max() else {
        return Duration::ZERO;
    };
    let wait = delay(recent.len() as u32);
    let elapsed = now.duration_since(*last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    wait.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn ended(phase: &str, at: Timestamp) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(at)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn delay_doubles_from_ten_seconds_up_to_ten_minutes() {
        let secs: Vec<u64> = (0..9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn only_failures_after_the_last_success_count() {
        let now = Timestamp::now();
        let ago = |s: i64| now - SignedDuration::from_secs(s);
        // Two failures after the success: 20 s from the latest, 5 s ago.
        let pods = [
            ended("Failed", ago(100)),
            ended("Succeeded", ago(50)),
            ended("Failed", ago(30)),
            ended("Failed", ago(5)),
        ];
        assert_eq!(remaining(pods.iter(), now).as_secs(), 15);
        // A success after them all clears the back-off.
        let pods = [ended("Failed", ago(30)), ended("Succeeded", ago(1))];
        assert_eq!(remaining(pods.iter(), now), Duration::ZERO);
        // Long past: nothing left to wait.
        let pods = [ended("Failed", ago(3600))];
        assert_eq!(remaining(pods.iter(), now), Duration::ZERO);
    }
}
