//! Pods that finish: like KWOK's stages, a hollow pod may "run" for a while and then exit
//! with a chosen code, so Jobs and CronJobs can be measured at cluster scale without real
//! work. The pod's annotations say how (`hollow.spindle.dev/run-for: "2s"`,
//! `hollow.spindle.dev/exit-code: "1"`), or else the process-wide defaults
//! (`spindle hollow-nodes --pod-run-for --pod-exit-code`).
//!
//! What follows the exit is the kubelet's rule for the pod's restartPolicy: Never ends
//! the pod Succeeded (exit 0) or Failed; OnFailure ends it Succeeded on exit 0 and
//! otherwise restarts the containers (restartCount up, lastState the exit) to run again;
//! Always restarts for ever, so such pods are left running here (they never finish).
//! The kubelet's crash-loop back-off between restarts is not played.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pods::{container_id, running_status, StartSpec};

/// How long a hollow pod's containers run before they exit (a Go duration).
pub const RUN_FOR: &str = "hollow.spindle.dev/run-for";
/// The exit code they exit with (default 0).
pub const EXIT_CODE: &str = "hollow.spindle.dev/exit-code";

/// The process-wide defaults for pods without the annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinishDefaults {
    /// None: pods without `run-for` run until deleted.
    pub run_for: Option<Duration>,
    pub exit_code: i32,
}

/// How a pod's containers end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub after: Duration,
    pub exit_code: i32,
    /// OnFailure: a failed run is followed by a restart rather than the end.
    pub restart_on_failure: bool,
}

/// How the pod finishes, from its annotations and restart policy over the defaults;
/// None when it runs until deleted. A malformed annotation is reported and ignored (the
/// pod is someone's test input; it must not stop the node).
pub fn finish_of(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    restart_policy: Option<&str>,
    defaults: &FinishDefaults,
) -> Option<Finish> {
    let restart_on_failure = match restart_policy {
        Some("Never") => false,
        Some("OnFailure") => true,
        // Always (the default): the kubelet restarts whatever the exit code.
        _ => return None,
    };
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let after = match get(RUN_FOR).map(spindle_meta::names::parse_duration) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            tracing::warn!(annotation = RUN_FOR, error = %e, "ignoring the annotation");
            defaults.run_for
        }
        None => defaults.run_for,
    }?;
    let exit_code = match get(EXIT_CODE).map(|v| v.trim().parse::<i32>()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::warn!(annotation = EXIT_CODE, error = %e, "ignoring the annotation");
            defaults.exit_code
        }
        None => defaults.exit_code,
    };
    Some(Finish {
        after,
        exit_code,
        restart_on_failure,
    })
}

/// What a run that ended does to the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod is done: Succeeded or Failed.
    Terminal,
    /// The containers restart and run `after` again.
    Restart,
}

pub fn outcome(f: &Finish) -> Outcome {
    if f.exit_code != 0 && f.restart_on_failure {
        Outcome::Restart
    } else {
        Outcome::Terminal
    }
}

fn terminated(s: &StartSpec, name: &str, code: i32, started: &Time, now: &Time) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(started.clone()),
            finished_at: Some(now.clone()),
            container_id: Some(container_id(&s.uid, name)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status the kubelet posts once every container has exited for good: phase
/// Succeeded when the code is 0, else Failed; the containers terminated (Completed or
/// Error) and no longer ready, Ready and ContainersReady False with reason PodCompleted.
pub fn finished_status(s: &StartSpec, code: i32, started: Timestamp, now: Timestamp) -> PodStatus {
    let (started, now_t) = (Time(started), Time(now));
    let mut st = running_status(s, started.0);
    st.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
    for c in st.container_statuses.iter_mut().flatten() {
        c.state = Some(terminated(s, &c.name, code, &started, &now_t));
        c.ready = false;
        c.started = Some(false);
    }
    for c in st.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            *c = PodCondition {
                type_: c.type_.clone(),
                status: "False".into(),
                reason: Some("PodCompleted".into()),
                last_transition_time: Some(now_t.clone()),
                ..Default::default()
            };
        }
    }
    st
}

/// The status after the containers exited with `code` and were started again (their
/// `restarts`-th restart): running, with the exit as their lastState.
pub fn restarted_status(
    s: &StartSpec,
    code: i32,
    restarts: i32,
    started: Timestamp,
    now: Timestamp,
) -> PodStatus {
    let (started_t, now_t) = (Time(started), Time(now));
    let mut st = running_status(s, now);
    // The pod started when it first did, not at this restart.
    st.start_time = Some(Time(s.started_at.unwrap_or(started)));
    for c in st.container_statuses.iter_mut().flatten() {
        c.restart_count = restarts;
        c.last_state = Some(terminated(s, &c.name, code, &started_t, &now_t));
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_over_defaults_by_restart_policy() {
        let d = FinishDefaults {
            run_for: Some(Duration::from_secs(9)),
            exit_code: 3,
        };
        let a = annotations(&[(RUN_FOR, "1.5s"), (EXIT_CODE, "42")]);
        let f = finish_of(Some(&a), Some("Never"), &d).expect("finishes");
        assert_eq!(f.after, Duration::from_millis(1500));
        assert_eq!(f.exit_code, 42);
        assert_eq!(outcome(&f), Outcome::Terminal);
        let f = finish_of(None, Some("OnFailure"), &d).expect("defaults apply");
        assert_eq!((f.after, f.exit_code), (Duration::from_secs(9), 3));
        assert_eq!(outcome(&f), Outcome::Restart);
        let ok = annotations(&[(EXIT_CODE, "0")]);
        let f = finish_of(Some(&ok), Some("OnFailure"), &d).expect("finishes");
        assert_eq!(outcome(&f), Outcome::Terminal);
        // Always restarts whatever happens: such a pod never finishes.
        assert_eq!(finish_of(Some(&a), Some("Always"), &d), None);
        assert_eq!(finish_of(Some(&a), None, &d), None);
        // No run-for anywhere: runs until deleted.
        assert_eq!(
            finish_of(None, Some("Never"), &FinishDefaults::default()),
            None
        );
        // Malformed values fall back to the defaults.
        let bad = annotations(&[(RUN_FOR, "soon"), (EXIT_CODE, "x")]);
        let f = finish_of(Some(&bad), Some("Never"), &d).expect("defaults apply");
        assert_eq!((f.after, f.exit_code), (Duration::from_secs(9), 3));
    }

    fn spec() -> StartSpec {
        StartSpec {
            uid: "u-1".into(),
            containers: vec![("app".into(), "img".into())],
            init_containers: vec![],
            pod_ip: Some(Ipv4Addr::new(10, 128, 0, 2)),
            host_ip: Ipv4Addr::new(10, 255, 0, 1),
            scheduled_at: None,
            started_at: None,
            finish: None,
            restarts: 0,
            restarted_at: None,
        }
    }

    #[test]
    fn finished_status_as_the_kubelet_reports_it() {
        let (t0, t1): (Timestamp, Timestamp) = (
            "2026-01-01T00:00:00Z".parse().expect("time"),
            "2026-01-01T00:00:02Z".parse().expect("time"),
        );
        for (code, phase, reason) in [(0, "Succeeded", "Completed"), (7, "Failed", "Error")] {
            let v = serde_json::to_value(finished_status(&spec(), code, t0, t1)).expect("json");
            assert_eq!(v["phase"], phase);
            let c = &v["containerStatuses"][0];
            assert_eq!(c["ready"], false);
            assert_eq!(c["state"]["terminated"]["exitCode"], code);
            assert_eq!(c["state"]["terminated"]["reason"], reason);
            assert_eq!(
                c["state"]["terminated"]["startedAt"],
                "2026-01-01T00:00:00Z"
            );
            assert_eq!(
                c["state"]["terminated"]["finishedAt"],
                "2026-01-01T00:00:02Z"
            );
            assert!(c["state"].get("running").is_none());
            let conds = v["conditions"].as_array().expect("conditions");
            let ready = conds.iter().find(|c| c["type"] == "Ready").expect("Ready");
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&"False".into(), &"PodCompleted".into())
            );
            assert_eq!(v["startTime"], "2026-01-01T00:00:00Z");
        }
    }

    #[test]
    fn a_restart_counts_and_keeps_the_exit() {
        let (t0, t1): (Timestamp, Timestamp) = (
            "2026-01-01T00:00:00Z".parse().expect("time"),
            "2026-01-01T00:00:02Z".parse().expect("time"),
        );
        let v = serde_json::to_value(restarted_status(&spec(), 1, 2, t0, t1)).expect("json");
        assert_eq!(v["phase"], "Running");
        let c = &v["containerStatuses"][0];
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(c["state"]["running"]["startedAt"], "2026-01-01T00:00:02Z");
    }
}
