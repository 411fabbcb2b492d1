//! The Pod table.

use chrono::{DateTime, Utc};

use super::format::non_empty_or;
use super::obj::{human_duration, Obj};
use super::{col, wide, Printer, AGE, NAME, NONE};

pub(super) static POD: Printer = Printer::new(&[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", |o, now| {
        summary(o, now).ready.into()
    }),
    col("Status", "string", "The aggregate status of the containers in this pod.", |o, now| {
        summary(o, now).reason.into()
    }),
    // A string, not an integer: it carries "(5m ago)" once a container has restarted.
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", |o, now| {
        summary(o, now).restarts.into()
    }),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", |o, _| {
        non_empty_or(pod_ip(o), NONE).into()
    }),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled.", |o, _| {
        non_empty_or(o.str_(&["spec", "nodeName"]), NONE).into()
    }),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node.", |o, _| {
        non_empty_or(o.str_(&["status", "nominatedNodeName"]), NONE).into()
    }),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.", |o, _| {
        readiness_gates(o).into()
    }),
]);

printed! {
    k8s_openapi::api::core::v1::Pod => POD,
}

/// READY, STATUS and RESTARTS, which the apiserver works out in one walk over the
/// containers' statuses.
struct Summary {
    ready: String,
    reason: String,
    restarts: String,
}

fn summary(o: Obj, now: DateTime<Utc>) -> Summary {
    let status = o.at(&["status"]);
    let init_specs = o.list(&["spec", "initContainers"]);
    // Sidecars (init containers that restart "Always") keep running beside the app containers,
    // so the apiserver counts them in READY and RESTARTS.
    let is_sidecar = |name: &str| {
        init_specs.iter().any(|c| {
            let c = Obj(c);
            c.str_(&["name"]) == name && c.str_(&["restartPolicy"]) == "Always"
        })
    };
    let mut total = o.list(&["spec", "containers"]).len();
    total += init_specs
        .iter()
        .filter(|c| Obj(c).str_(&["restartPolicy"]) == "Always")
        .count();

    let phase = status.str_(&["phase"]);
    let mut reason = non_empty_or(status.str_(&["reason"]), phase).to_string();
    if status.list(&["conditions"]).iter().any(|c| {
        let c = Obj(c);
        c.str_(&["type"]) == "PodScheduled" && c.str_(&["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut sidecar_restarts = 0i64;
    let mut sidecar_last_restart: Option<DateTime<Utc>> = None;
    let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| a.max(b);

    let init_statuses = status.list(&["initContainerStatuses"]);
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let c = Obj(c);
        let finished = c.time(&["lastState", "terminated", "finishedAt"]);
        restarts += c.int(&["restartCount"]);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(c.str_(&["name"]));
        if sidecar {
            sidecar_restarts += c.int(&["restartCount"]);
            sidecar_last_restart = later(sidecar_last_restart, finished);
        }
        let terminated = c.at(&["state", "terminated"]);
        let waiting_reason = c.str_(&["state", "waiting", "reason"]);
        if terminated.has(&[]) && terminated.int(&["exitCode"]) == 0 {
            continue;
        }
        if sidecar && c.bool_(&["started"]) == Some(true) {
            if c.bool_(&["ready"]) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.has(&[]) {
            match terminated.str_(&["reason"]) {
                "" if terminated.int(&["signal"]) != 0 => {
                    format!("Init:Signal:{}", terminated.int(&["signal"]))
                }
                "" => format!("Init:ExitCode:{}", terminated.int(&["exitCode"])),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    // An Initialized pod whose init container restarted is still running its app containers,
    // and those are what the user wants to see.
    if !initializing || o.condition_true("Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        // Walked backwards so that the first container's state wins the STATUS column.
        for c in status.list(&["containerStatuses"]).iter().rev() {
            let c = Obj(c);
            restarts += c.int(&["restartCount"]);
            last_restart = later(
                last_restart,
                c.time(&["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = c.str_(&["state", "waiting", "reason"]);
            let terminated = c.at(&["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated.has(&[]) {
                reason = match terminated.str_(&["reason"]) {
                    "" if terminated.int(&["signal"]) != 0 => {
                        format!("Signal:{}", terminated.int(&["signal"]))
                    }
                    "" => format!("ExitCode:{}", terminated.int(&["exitCode"])),
                    r => r.to_string(),
                };
            } else if c.bool_(&["ready"]) == Some(true) && c.has(&["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // One container finished while another still serves: the pod as a whole is running.
        if reason == "Completed" && has_running {
            reason = if o.condition_true("Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if o.has(&["metadata", "deletionTimestamp"]) {
        if status.str_(&["reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts = match last_restart {
        Some(t) => format!("{restarts} ({} ago)", human_duration(now - t)),
        None => restarts.to_string(),
    };

    Summary {
        ready: format!("{ready}/{total}"),
        reason,
        restarts,
    }
}

fn pod_ip<'a>(o: Obj<'a>) -> &'a str {
    let status = o.at(&["status"]);
    status
        .list(&["podIPs"])
        .first()
        .map(|p| Obj(p).str_(&["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| status.str_(&["podIP"]))
}

fn readiness_gates(o: Obj) -> String {
    let gates = o.list(&["spec", "readinessGates"]);
    if gates.is_empty() {
        return NONE.to_string();
    }
    let conditions = o.list(&["status", "conditions"]);
    let passed = gates
        .iter()
        .filter(|g| {
            let want = Obj(g).str_(&["conditionType"]);
            conditions
                .iter()
                .map(Obj)
                .find(|c| c.str_(&["type"]) == want)
                .is_some_and(|c| c.str_(&["status"]) == "True")
        })
        .count();
    format!("{passed}/{}", gates.len())
}
