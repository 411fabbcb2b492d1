//! The Namespace, Node and Lease tables.

use k8s_openapi::api::{coordination, core};

use super::format::non_empty_or;
use super::obj::Obj;
use super::{col, wide, Printer, AGE, NAME, NONE, UNKNOWN};

pub(super) static NAMESPACE: Printer = Printer::new(&[
    NAME,
    col("Status", "string", "The status of the namespace", |o, _| {
        o.str_(&["status", "phase"]).into()
    }),
    AGE,
]);

pub(super) static NODE: Printer = Printer::new(&[
    NAME,
    col("Status", "string", "The status of the node", |o, _| {
        node_status(o).into()
    }),
    col("Roles", "string", "The roles of the node", |o, _| {
        roles(o).into()
    }),
    AGE,
    col(
        "Version",
        "string",
        "Kubelet Version reported by the node.",
        |o, _| o.str_(&["status", "nodeInfo", "kubeletVersion"]).into(),
    ),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
        |o, _| address(o, "InternalIP").into(),
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
        |o, _| address(o, "ExternalIP").into(),
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release.",
        |o, _| node_info(o, "osImage").into(),
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r'.",
        |o, _| node_info(o, "kernelVersion").into(),
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API.",
        |o, _| node_info(o, "containerRuntimeVersion").into(),
    ),
]);

pub(super) static LEASE: Printer = Printer::new(&[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
        |o, _| o.str_(&["spec", "holderIdentity"]).into(),
    ),
    AGE,
]);

printed! {
    core::v1::Namespace => NAMESPACE,
    core::v1::Node => NODE,
    coordination::v1::Lease => LEASE,
}

fn node_status(o: Obj) -> String {
    // Only the Ready condition speaks for the node; pressure conditions are left to describe.
    let ready = o
        .list(&["status", "conditions"])
        .iter()
        .rev()
        .map(Obj)
        .find(|c| c.str_(&["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if c.str_(&["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.bool_(&["spec", "unschedulable"]) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn roles(o: Obj) -> String {
    let mut roles: Vec<&str> = o
        .at(&["metadata", "labels"])
        .0
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then_some(role)
            } else if k == "kubernetes.io/role" {
                v.as_str().filter(|r| !r.is_empty())
            } else {
                None
            }
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        NONE.to_string()
    } else {
        roles.join(",")
    }
}

fn address<'a>(o: Obj<'a>, type_: &str) -> &'a str {
    o.list(&["status", "addresses"])
        .iter()
        .map(Obj)
        .find(|a| a.str_(&["type"]) == type_)
        .map_or(NONE, |a| a.str_(&["address"]))
}

fn node_info<'a>(o: Obj<'a>, field: &str) -> &'a str {
    non_empty_or(o.str_(&["status", "nodeInfo", field]), UNKNOWN)
}
