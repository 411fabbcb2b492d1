//! Address allocation done by the API server, as Kubernetes does: Service ClusterIPs from
//! the service CIDR, NodePorts from their range, and each Node's pod CIDR from the cluster
//! CIDR.
//!
//! Every allocated value is a reservation key in the store (`/spindle/alloc/...`) created
//! with create-if-absent, so two concurrent creates can never get the same address, also
//! with several API servers on one store. A reservation names its owner (namespace, name,
//! uid); rather than hooking every deletion path, a reservation whose owner no longer
//! exists is stale and is taken over (compare-and-swap) by the next allocation. Automatic
//! allocation passes over fresh reservations whose owner is not stored yet (it may still
//! be being admitted, as when two nodes register at once); a value asked for by name
//! (`spec.clusterIP`, `nodePort`) takes over any reservation whose owner is gone, so a
//! deleted Service's address can be given again at once.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use spindle_api::strategy::Allocation;
use spindle_api::validation::cluster_ips;
use spindle_store::StoreError;

use crate::rest::key;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Address ranges of the cluster (k3s defaults).
#[derive(Clone, Copy, Debug)]
pub struct NetRanges {
    pub service_cidr: (Ipv4Addr, u8),
    pub cluster_cidr: (Ipv4Addr, u8),
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_len: u8,
    pub node_ports: (u16, u16),
}

impl Default for NetRanges {
    fn default() -> Self {
        NetRanges {
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            node_cidr_len: 24,
            node_ports: (30000, 32767),
        }
    }
}

/// Parse `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if len > 30 {
        return Err(format!("{s:?}: the prefix must be /30 or shorter"));
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
}

fn in_cidr(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net)
}

fn owner_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({"namespace": m["namespace"], "name": m["name"], "uid": m["uid"]})
}

/// Whether the object a reservation names still exists with the same uid.
async fn owner_alive(st: &AppState, plural: &str, owner: &Value) -> ApiResult<bool> {
    let Some(kind) = st.reg.by_resource("", "v1", plural) else {
        return Ok(false);
    };
    let k = key(kind, owner["namespace"].as_str(), owner["name"].as_str());
    let Some(kv) = st.store.get(&k).await? else {
        return Ok(false);
    };
    let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    Ok(obj["metadata"]["uid"] == owner["uid"])
}

/// Reserve `what` for `owner`. Returns false when someone alive holds it.
/// How long a reservation stays its owner's before it may be found stale: far longer
/// than admitting and storing an object takes.
const RESERVATION_GRACE_SECS: u64 = 60;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn same_owner(a: &Value, b: &Value) -> bool {
    ["namespace", "name", "uid"].iter().all(|f| a[f] == b[f])
}

/// Who may take over a reservation whose owner is not stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The value was asked for: take it over at once.
    Requested,
    /// Picked automatically: leave fresh reservations alone.
    Automatic,
}

async fn reserve(
    st: &AppState,
    what: &str,
    plural: &str,
    owner: &Value,
    claim: Claim,
) -> ApiResult<bool> {
    let k = format!("/spindle/alloc/{what}");
    let mut record = owner.clone();
    record["reservedAt"] = json!(unix_now());
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    match st.store.create(&k, bytes.clone()).await {
        Ok(_) => return Ok(true),
        Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(kv) = st.store.get(&k).await? else {
        return Ok(false);
    };
    let holder: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    if same_owner(&holder, owner) {
        return Ok(true);
    }
    // Records written before timestamps existed count as old.
    let age = unix_now().saturating_sub(holder["reservedAt"].as_u64().unwrap_or(0));
    let fresh = claim == Claim::Automatic && age < RESERVATION_GRACE_SECS;
    if fresh || owner_alive(st, plural, &holder).await? {
        return Ok(false);
    }
    match st.store.update(&k, bytes, Some(kv.mod_revision)).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn invalid(field: &str, value: &Value, msg: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("Service is invalid: {field}: Invalid value: {value}: {msg}"),
    )
    .with_details(json!({
        "kind": "Service",
        "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {msg}"), "field": field}],
    }))
}

/// The allocation a kind's strategy asks for on creation.
pub async fn on_create(st: &AppState, a: Allocation, obj: &mut Value) -> ApiResult<()> {
    match a {
        Allocation::ServiceAddresses => admit_service(st, obj).await,
        Allocation::NodePodCidr => admit_node(st, obj).await,
    }
}

/// The allocation a kind's strategy asks for on an update of the main resource: a
/// Service that had no address (ExternalName) gets one as on creation, in range and
/// reserved, never simply the one the update names.
pub async fn on_update(
    st: &AppState,
    a: Allocation,
    old: &Value,
    obj: &mut Value,
) -> ApiResult<()> {
    match a {
        Allocation::ServiceAddresses
            if cluster_ips(old).is_empty() && !cluster_ips(obj).contains(&"None") =>
        {
            admit_service(st, obj).await
        }
        Allocation::ServiceAddresses | Allocation::NodePodCidr => Ok(()),
    }
}

/// Assign the ClusterIP and NodePorts of a Service being created.
pub async fn admit_service(st: &AppState, obj: &mut Value) -> ApiResult<()> {
    let ranges = st.net;
    let owner = owner_of(obj);
    let spec = &mut obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    match spec["clusterIP"].as_str() {
        Some("None") => {
            spec["clusterIPs"] = json!(["None"]);
        }
        Some(ip) if !ip.is_empty() => {
            let parsed: Ipv4Addr = ip
                .parse()
                .map_err(|_| invalid("spec.clusterIP", &json!(ip), "must be a valid IP address"))?;
            if !in_cidr(parsed, ranges.service_cidr) {
                let (net, len) = ranges.service_cidr;
                return Err(invalid(
                    "spec.clusterIPs",
                    &json!([ip]),
                    &format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}/{len}"),
                ));
            }
            if !reserve(
                st,
                &format!("serviceip/{parsed}"),
                "services",
                &owner,
                Claim::Requested,
            )
            .await?
            {
                return Err(invalid(
                    "spec.clusterIPs",
                    &json!([ip]),
                    &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                ));
            }
            spec["clusterIPs"] = json!([ip]);
        }
        _ => {
            let ip = allocate_ip(st, &owner).await?;
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
        }
    }
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    if ty == "NodePort" || ty == "LoadBalancer" {
        let n = spec["ports"].as_array().map_or(0, Vec::len);
        for i in 0..n {
            let field = format!("spec.ports[{i}].nodePort");
            match spec["ports"][i]["nodePort"].as_u64() {
                Some(p) => {
                    if !reserve(
                        st,
                        &format!("nodeport/{p}"),
                        "services",
                        &owner,
                        Claim::Requested,
                    )
                    .await?
                    {
                        return Err(invalid(
                            &field,
                            &json!(p),
                            "provided port is already allocated",
                        ));
                    }
                }
                None => {
                    let p = allocate_port(st, &owner).await?;
                    spec["ports"][i]["nodePort"] = json!(p);
                }
            }
        }
    }
    Ok(())
}

/// A free address of the service CIDR, chosen at random (as Kubernetes does) so that
/// concurrent creates rarely race for one; .1 is left for the `kubernetes` Service.
async fn allocate_ip(st: &AppState, owner: &Value) -> ApiResult<Ipv4Addr> {
    let (net, len) = st.net.service_cidr;
    let size = 1u32 << (32 - u32::from(len));
    let base = u32::from(net);
    let start = rand::random::<u32>() % size;
    for i in 0..size {
        let off = (start + i) % size;
        if off < 2 || off == size - 1 {
            continue;
        }
        let ip = Ipv4Addr::from(base + off);
        if reserve(
            st,
            &format!("serviceip/{ip}"),
            "services",
            owner,
            Claim::Automatic,
        )
        .await?
        {
            return Ok(ip);
        }
    }
    let (net, len) = st.net.service_cidr;
    Err(ApiError::new(
        500,
        "InternalError",
        format!(
            "Internal error occurred: failed to allocate a serviceIP: range is full ({net}/{len})"
        ),
    ))
}

async fn allocate_port(st: &AppState, owner: &Value) -> ApiResult<u16> {
    let (lo, hi) = st.net.node_ports;
    let size = u32::from(hi - lo) + 1;
    let start = rand::random::<u32>() % size;
    for i in 0..size {
        let p = lo + ((start + i) % size) as u16;
        if reserve(
            st,
            &format!("nodeport/{p}"),
            "services",
            owner,
            Claim::Automatic,
        )
        .await?
        {
            return Ok(p);
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        "Internal error occurred: failed to allocate a nodePort: range is full",
    ))
}

/// Give a Node being created its pod CIDR (the node IPAM controller's job in Kubernetes).
pub async fn admit_node(st: &AppState, obj: &mut Value) -> ApiResult<()> {
    if obj["spec"]["podCIDR"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Ok(());
    }
    let owner = owner_of(obj);
    let (net, len) = st.net.cluster_cidr;
    let per = st.net.node_cidr_len.max(len);
    let blocks = 1u32 << u32::from(per - len);
    let step = 1u32 << (32 - u32::from(per));
    for i in 0..blocks {
        let block = Ipv4Addr::from(u32::from(net) + i * step);
        let cidr = format!("{block}/{per}");
        if reserve(
            st,
            &format!("podcidr/{block}"),
            "nodes",
            &owner,
            Claim::Automatic,
        )
        .await?
        {
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            obj["spec"]["podCIDR"] = json!(cidr);
            obj["spec"]["podCIDRs"] = json!([cidr]);
            return Ok(());
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: no pod CIDR left in {net}/{len}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.43.7.9/16"),
            Ok((Ipv4Addr::new(10, 43, 0, 0), 16))
        );
        assert!(parse_cidr("10.43.0.0").is_err());
        assert!(in_cidr(
            Ipv4Addr::new(10, 43, 200, 1),
            (Ipv4Addr::new(10, 43, 0, 0), 16)
        ));
        assert!(!in_cidr(
            Ipv4Addr::new(10, 44, 0, 1),
            (Ipv4Addr::new(10, 43, 0, 0), 16)
        ));
    }
}
