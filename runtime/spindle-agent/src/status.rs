//! Pod status the Kubernetes way, computed from what the agent knows of each container:
//! phase (the kubelet's rules), the four conditions, and container states with reasons.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::reason::{ExitReason, Waiting};

#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
    pub started: Option<Timestamp>,
    pub finished: Timestamp,
    pub container_id: Option<String>,
    /// Which run of the container this was (its log file), not reported.
    pub run: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Waiting {
        reason: Waiting,
        message: Option<String>,
    },
    Running {
        started: Timestamp,
    },
    Terminated(Term),
}

/// What the agent tracks per container.
#[derive(Clone, Debug, PartialEq)]
pub struct CStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub restart_count: i32,
    pub state: RunState,
    pub last: Option<Term>,
    /// The readiness probe's verdict for the current run; `None` without a readiness
    /// probe (a running container is then ready).
    pub probe_ready: Option<bool>,
    /// Whether the startup probe has succeeded in the current run; `None` without one.
    pub probe_started: Option<bool>,
}

impl CStatus {
    pub fn new(name: &str, image: &str) -> Self {
        CStatus {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            restart_count: 0,
            state: RunState::Waiting {
                reason: Waiting::PodInitializing,
                message: None,
            },
            last: None,
            probe_ready: None,
            probe_started: None,
        }
    }

    pub fn waiting(&mut self, reason: Waiting, message: Option<String>) {
        self.state = RunState::Waiting { reason, message };
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    /// Running, started (startup probe passed) and ready (readiness probe passed).
    pub fn is_ready(&self) -> bool {
        self.is_started() && self.probe_ready.unwrap_or(true)
    }

    pub fn is_started(&self) -> bool {
        self.is_running() && self.probe_started.unwrap_or(true)
    }

    fn to_k8s(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            restart_count: self.restart_count,
            ready: self.is_ready(),
            started: Some(self.is_started()),
            state: Some(state_k8s(&self.state)),
            last_state: Some(
                self.last
                    .as_ref()
                    .map(|t| state_k8s(&RunState::Terminated(t.clone())))
                    .unwrap_or_default(),
            ),
            ..Default::default()
        }
    }
}

fn state_k8s(s: &RunState) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        RunState::Running { started } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started)),
            }),
            ..Default::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.code,
                reason: Some(t.reason.to_string()),
                message: t.message.clone(),
                started_at: t.started.map(Time),
                finished_at: Some(Time(t.finished)),
                container_id: t.container_id.clone(),
                signal: None,
            }),
            ..Default::default()
        },
    }
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub inits: &'a [CStatus],
    pub containers: &'a [CStatus],
    /// All init containers have completed successfully.
    pub initialized: bool,
    pub restart_policy: &'a str,
    pub start_time: Timestamp,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    /// An init container failed for good (restartPolicy Never).
    pub init_failed: bool,
    /// The agent evicted the pod (an emptyDir over its sizeLimit): why.
    pub evicted: Option<&'a str>,
    pub previous: Option<&'a PodStatus>,
}

/// The kubelet's getPhase.
pub fn phase(v: &PodView) -> &'static str {
    if v.init_failed || v.evicted.is_some() {
        return "Failed";
    }
    if !v.initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in v.containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } => {
                if c.last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if v.restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if v.restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(
    prev: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
    let last = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: Some(last),
        ..Default::default()
    }
}

pub fn pod_status(v: &PodView) -> PodStatus {
    let phase = phase(v);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<&str> = v
        .containers
        .iter()
        .filter(|c| !c.is_ready())
        .map(|c| c.name.as_str())
        .collect();
    let incomplete: Vec<&str> = v
        .inits
        .iter()
        .filter(|c| !matches!(&c.state, RunState::Terminated(t) if t.code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let ready = unready.is_empty() && !terminal;
    let (not_ready_reason, not_ready_msg) = if terminal {
        ("PodCompleted".to_string(), None)
    } else {
        (
            "ContainersNotReady".to_string(),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let prev = v.previous;
    let conditions = vec![
        condition(prev, "PodReadyToStartContainers", true, None, None),
        condition(
            prev,
            "Initialized",
            v.initialized || (terminal && !v.init_failed),
            Some("ContainersNotInitialized".into()),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        ),
        condition(
            prev,
            "Ready",
            ready,
            Some(not_ready_reason.clone()),
            not_ready_msg.clone(),
        ),
        condition(
            prev,
            "ContainersReady",
            ready,
            Some(not_ready_reason),
            not_ready_msg,
        ),
        condition(prev, "PodScheduled", true, None, None),
    ];
    PodStatus {
        phase: Some(phase.to_string()),
        reason: v.evicted.map(|_| "Evicted".to_string()),
        message: v.evicted.map(str::to_string),
        conditions: Some(conditions),
        host_ip: Some(v.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: v.host_ip.to_string(),
        }]),
        pod_ip: v.pod_ip.map(str::to_string),
        pod_ips: v
            .pod_ip
            .map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip: ip.to_string() }]),
        start_time: Some(Time(v.start_time)),
        init_container_statuses: if v.inits.is_empty() {
            None
        } else {
            Some(v.inits.iter().map(CStatus::to_k8s).collect())
        },
        container_statuses: Some(v.containers.iter().map(CStatus::to_k8s).collect()),
        qos_class: prev.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> RunState {
        RunState::Terminated(Term {
            code,
            reason: ExitReason::parse_or(None, code),
            message: None,
            started: None,
            finished: Timestamp::now(),
            container_id: None,
            run: 0,
        })
    }

    fn view<'a>(cs: &'a [CStatus], policy: &'a str) -> PodView<'a> {
        PodView {
            inits: &[],
            containers: cs,
            initialized: true,
            restart_policy: policy,
            start_time: Timestamp::now(),
            host_ip: "10.0.0.1",
            pod_ip: None,
            init_failed: false,
            evicted: None,
            previous: None,
        }
    }

    #[test]
    fn an_evicted_pod_is_failed_with_the_reason() {
        let cs = [CStatus::new("c", "img")];
        let mut v = view(&cs, "Always");
        v.evicted = Some("Usage of EmptyDir volume \"x\" exceeds the limit \"1Mi\". ");
        let st = pod_status(&v);
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("Evicted"));
        assert_eq!(st.message.as_deref(), v.evicted);
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let mut a = CStatus::new("a", "img");
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Always")), "Pending");
        a.state = RunState::Running {
            started: Timestamp::now(),
        };
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Always")), "Running");
        a.state = term(0);
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Never")), "Succeeded");
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Always")), "Running");
        a.state = term(3);
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Never")), "Failed");
        assert_eq!(
            phase(&view(std::slice::from_ref(&a), "OnFailure")),
            "Running"
        );
        // Crash-looping: waiting with a last state counts as stopped, not pending.
        a.waiting(Waiting::CrashLoopBackOff, None);
        a.last = Some(Term {
            code: 1,
            reason: ExitReason::Error,
            message: None,
            started: None,
            finished: Timestamp::now(),
            container_id: None,
            run: 0,
        });
        assert_eq!(phase(&view(std::slice::from_ref(&a), "Always")), "Running");
    }

    #[test]
    fn completed_pod_is_not_ready() {
        let mut a = CStatus::new("a", "img");
        a.state = term(0);
        let st = pod_status(&view(std::slice::from_ref(&a), "Never"));
        let ready = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready condition");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }
}
