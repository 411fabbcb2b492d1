//! The tables of the workload controllers: Deployment, ReplicaSet, ReplicationController,
//! DaemonSet and StatefulSet.

use k8s_openapi::api::{apps, core};
use serde_json::Value;

use super::format::{containers, format_label_selector, format_labels, label_selector};
use super::obj::Obj;
use super::{col, wide, Cell, Column, Printer, AGE, NAME};

const DESC_SELECTOR: &str = "A label query over pods that should match the replica count. It must match the pod template's labels.";

/// CONTAINERS and IMAGES of the pod template at `spec.template`.
pub(super) const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
    |o, _| containers(o.at(&["spec", "template", "spec"])).0.into(),
);
pub(super) const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
    |o, _| containers(o.at(&["spec", "template", "spec"])).1.into(),
);
/// SELECTOR for a `spec.selector` LabelSelector.
pub(super) const SELECTOR: Column = wide("Selector", "string", DESC_SELECTOR, |o, _| {
    format_label_selector(o.at(&["spec", "selector"])).into()
});

const fn int(name: &'static str, description: &'static str, cell: Cell) -> Column {
    col(name, "integer", description, cell)
}

/// READY as "ready/desired", desired defaulting to 1 as the API does.
fn ready_of_desired(o: Obj) -> Value {
    format!(
        "{}/{}",
        o.int(&["status", "readyReplicas"]),
        o.int_or(&["spec", "replicas"], 1)
    )
    .into()
}

pub(super) static DEPLOYMENT: Printer = Printer::new(&[
    NAME,
    col("Ready", "string", "Number of the pod with ready state", |o, _| ready_of_desired(o)),
    int("Up-to-date", "Total number of non-terminating pods targeted by this deployment that have the desired template spec.", |o, _| {
        o.int(&["status", "updatedReplicas"]).into()
    }),
    int("Available", "Total number of available non-terminating pods targeted by this deployment.", |o, _| {
        o.int(&["status", "availableReplicas"]).into()
    }),
    AGE,
    CONTAINERS,
    IMAGES,
    // Deployments alone print an empty selector as "" rather than "<none>".
    wide("Selector", "string", DESC_SELECTOR, |o, _| {
        label_selector(o.at(&["spec", "selector"])).into()
    }),
]);

pub(super) static REPLICA_SET: Printer = Printer::new(&[
    NAME,
    int(
        "Desired",
        "Replicas is the number of desired pods.",
        |o, _| o.int_or(&["spec", "replicas"], 1).into(),
    ),
    int(
        "Current",
        "Replicas is the most recently observed number of non-terminating pods.",
        |o, _| o.int(&["status", "replicas"]).into(),
    ),
    int(
        "Ready",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
        |o, _| o.int(&["status", "readyReplicas"]).into(),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
]);

/// As the ReplicaSet's, but the selector is a plain label map.
pub(super) static REPLICATION_CONTROLLER: Printer = Printer::new(&[
    NAME,
    int(
        "Desired",
        "Replicas is the number of desired replicas.",
        |o, _| o.int_or(&["spec", "replicas"], 1).into(),
    ),
    int(
        "Current",
        "Replicas is the most recently observed number of replicas.",
        |o, _| o.int(&["status", "replicas"]).into(),
    ),
    int(
        "Ready",
        "The number of ready replicas for this replication controller.",
        |o, _| o.int(&["status", "readyReplicas"]).into(),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count.",
        |o, _| format_labels(o.at(&["spec", "selector"])).into(),
    ),
]);

pub(super) static DAEMON_SET: Printer = Printer::new(&[
    NAME,
    int("Desired", "The total number of nodes that should be running the daemon pod.", |o, _| {
        o.int(&["status", "desiredNumberScheduled"]).into()
    }),
    int("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.", |o, _| {
        o.int(&["status", "currentNumberScheduled"]).into()
    }),
    int("Ready", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.", |o, _| {
        o.int(&["status", "numberReady"]).into()
    }),
    int("Up-to-date", "The total number of nodes that are running updated daemon pod", |o, _| {
        o.int(&["status", "updatedNumberScheduled"]).into()
    }),
    int("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.", |o, _| {
        o.int(&["status", "numberAvailable"]).into()
    }),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node.", |o, _| {
        format_labels(o.at(&["spec", "template", "spec", "nodeSelector"])).into()
    }),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
]);

/// kube's ControllerRevision table: the owner as `daemonset.apps/name`, and the number.
pub(super) static CONTROLLER_REVISION: Printer = Printer::new(&[
    NAME,
    col(
        "Controller",
        "string",
        "Controller of the object",
        |o, _| controller_of(o).into(),
    ),
    int("Revision", "Revision of the ControllerRevision", |o, _| {
        o.int(&["revision"]).into()
    }),
    AGE,
]);

fn controller_of(o: Obj<'_>) -> String {
    let owner = o
        .list(&["metadata", "ownerReferences"])
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let Some(owner) = owner else {
        return "<none>".into();
    };
    let (o, s) = (Obj(owner), |v: &str| v.to_string());
    let group = o.str_(&["apiVersion"]).rsplit_once('/').map(|(g, _)| s(g));
    let kind = o.str_(&["kind"]).to_lowercase();
    let kind = match group {
        Some(g) => format!("{kind}.{g}"),
        None => kind,
    };
    format!("{kind}/{}", o.str_(&["name"]))
}

pub(super) static STATEFUL_SET: Printer = Printer::new(&[
    NAME,
    col(
        "Ready",
        "string",
        "Number of the pod with ready state",
        |o, _| ready_of_desired(o),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
]);

printed! {
    apps::v1::Deployment => DEPLOYMENT,
    apps::v1::ReplicaSet => REPLICA_SET,
    core::v1::ReplicationController => REPLICATION_CONTROLLER,
    apps::v1::DaemonSet => DAEMON_SET,
    apps::v1::StatefulSet => STATEFUL_SET,
    apps::v1::ControllerRevision => CONTROLLER_REVISION,
}
