//! The Service, Endpoints and EndpointSlice tables.

use k8s_openapi::api::{core, discovery};
use serde_json::Value;

use super::format::{format_labels, list_with_more, non_empty_or};
use super::obj::Obj;
use super::{col, wide, Printer, AGE, NAME, NONE, UNKNOWN};

pub(super) static SERVICE: Printer = Printer::new(&[
    NAME,
    col("Type", "string", "type determines how the Service is exposed.", |o, _| {
        service_type(o).into()
    }),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service.", |o, _| {
        cluster_ip(o).into()
    }),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", |o, _| {
        external_ip(o).into()
    }),
    col("Port(s)", "string", "The list of ports that are exposed by this service.", |o, _| {
        ports(o).into()
    }),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector.", |o, _| {
        format_labels(o.at(&["spec", "selector"])).into()
    }),
]);

pub(super) static ENDPOINTS: Printer = Printer::new(&[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
        |o, _| endpoints(o).into(),
    ),
    AGE,
]);

pub(super) static ENDPOINT_SLICE: Printer = Printer::new(&[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
        |o, _| o.str_(&["addressType"]).into(),
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
        |o, _| slice_ports(o).into(),
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
        |o, _| slice_addresses(o).into(),
    ),
    AGE,
]);

printed! {
    core::v1::Service => SERVICE,
    core::v1::Endpoints => ENDPOINTS,
    discovery::v1::EndpointSlice => ENDPOINT_SLICE,
}

/// The apiserver defaults the type, so a missing one means ClusterIP.
fn service_type<'a>(o: Obj<'a>) -> &'a str {
    non_empty_or(o.str_(&["spec", "type"]), "ClusterIP")
}

fn cluster_ip<'a>(o: Obj<'a>) -> &'a str {
    let spec = o.at(&["spec"]);
    spec.list(&["clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| non_empty_or(spec.str_(&["clusterIP"]), NONE))
}

fn external_ip(o: Obj) -> String {
    let spec = o.at(&["spec"]);
    let external_ips: Vec<&str> = spec
        .list(&["externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(o) {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => NONE.to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = o
                .list(&["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| {
                    let i = Obj(i);
                    non_empty_or(i.str_(&["ip"]), i.str_(&["hostname"]))
                })
                .filter(|s| !s.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external_ips);
            if ingress.is_empty() {
                "<pending>".to_string()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => spec.str_(&["externalName"]).to_string(),
        _ => UNKNOWN.to_string(),
    }
}

fn ports(o: Obj) -> String {
    let ports: Vec<String> = o
        .at(&["spec"])
        .list(&["ports"])
        .iter()
        .map(|p| {
            let p = Obj(p);
            let protocol = non_empty_or(p.str_(&["protocol"]), "TCP");
            match p.int(&["nodePort"]) {
                n if n > 0 => format!("{}:{n}/{protocol}", p.int(&["port"])),
                _ => format!("{}/{protocol}", p.int(&["port"])),
            }
        })
        .collect();
    if ports.is_empty() {
        NONE.to_string()
    } else {
        ports.join(",")
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpoints(o: Obj) -> String {
    let subsets = o.list(&["subsets"]);
    let items = subsets.iter().flat_map(|ss| {
        let ss = Obj(ss);
        let ips: Vec<&str> = ss
            .list(&["addresses"])
            .iter()
            .map(|a| Obj(a).str_(&["ip"]))
            .collect();
        let ports: Vec<i64> = ss
            .list(&["ports"])
            .iter()
            .map(|p| Obj(p).int(&["port"]))
            .collect();
        // Headless services may have no ports; then the addresses stand alone.
        if ports.is_empty() {
            ips.into_iter().map(str::to_string).collect::<Vec<_>>()
        } else {
            ports
                .iter()
                .flat_map(|port| ips.iter().map(move |ip| join_host_port(ip, *port)))
                .collect()
        }
    });
    list_with_more(items, NONE)
}

fn slice_ports(o: Obj) -> String {
    let ports = o.list(&["ports"]).iter().map(|p| {
        let p = Obj(p);
        if p.has(&["port"]) {
            p.int(&["port"]).to_string()
        } else if let Some(name) = p.at(&["name"]).0.as_str() {
            name.to_string()
        } else {
            "*".to_string()
        }
    });
    list_with_more(ports, "<unset>")
}

fn slice_addresses(o: Obj) -> String {
    let addresses = o.list(&["endpoints"]).iter().flat_map(|e| {
        Obj(e)
            .list(&["addresses"])
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
    });
    list_with_more(addresses, "<unset>")
}
