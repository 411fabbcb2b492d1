//! Objects every cluster has that the control plane creates at start.

/// `kube-system/kube-dns`, the Service pods' DNS address belongs to (as in every
/// Kubernetes cluster): it reserves the address, and kubectl shows it. Each node's agent
/// answers it itself, so it has no selector.
pub async fn ensure_dns_service(
    client: kube::Client,
    ip: std::net::Ipv4Addr,
) -> Result<(), kube::Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "kube-system");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ]},
    }))
    .map_err(kube::Error::SerdeError)?;
    // Present from an earlier start: done (a create would be refused for its address,
    // which the existing Service holds, before the name is checked).
    if api.get_opt("kube-dns").await?.is_some() {
        return Ok(());
    }
    match api.create(&Default::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The built-in StorageClass `local-path` (as k3s ships one): the cluster's default, so a
/// claim without a class is provisioned as a directory on the node its first pod is
/// scheduled to. Created once; a class the user changed or annotated is left alone.
pub async fn ensure_default_storage_class(client: kube::Client) -> Result<(), kube::Error> {
    use spindle_meta::storage::{
        DEFAULT_CLASS_ANNOTATION, LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER,
    };
    let api: kube::Api<k8s_openapi::api::storage::v1::StorageClass> = kube::Api::all(client);
    if api.get_opt(LOCAL_PATH_CLASS).await?.is_some() {
        return Ok(());
    }
    let class = serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS,
                     "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&Default::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// `default/kubernetes`, the Service in-cluster clients reach the API server by (the
/// first address of the Service CIDR, port 443 named https), with its Endpoints and
/// EndpointSlice naming the server's advertised address and port, as kube-apiserver's
/// endpoint reconciler keeps them. Brought up to date at every start (the address or
/// port may have changed); without an address reachable from pods (a server on
/// loopback only) the Service has no endpoints.
pub async fn ensure_kubernetes_service(
    client: kube::Client,
    cluster_ip: std::net::Ipv4Addr,
    endpoint: Option<std::net::IpAddr>,
    port: u16,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    let ns = "default";
    let name = "kubernetes";
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
    let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), ns);
    match services.get_opt(name).await? {
        Some(_) => {
            let patch = json!({"spec": {"ports": ports}});
            services
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        None => {
            let svc = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": cluster_ip.to_string(), "ports": ports,
                         "sessionAffinity": "None", "type": "ClusterIP"},
            }))
            .map_err(kube::Error::SerdeError)?;
            match services.create(&Default::default(), &svc).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    let (subsets, slice_endpoints, family) = match endpoint {
        Some(ip) => (
            json!([{"addresses": [{"ip": ip.to_string()}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]),
            json!([{"addresses": [ip.to_string()], "conditions": {"ready": true}}]),
            if ip.is_ipv6() { "IPv6" } else { "IPv4" },
        ),
        None => (json!([]), json!([]), "IPv4"),
    };
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": family,
        "endpoints": slice_endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    put::<Endpoints>(&client, ns, name, endpoints).await?;
    put::<EndpointSlice>(&client, ns, name, slice).await
}

/// Create `obj`, or replace what is stored under its name.
async fn put<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    obj: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
    let mut want: K = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    match api.get_opt(name).await? {
        Some(old) => {
            want.meta_mut().resource_version = old.meta().resource_version.clone();
            api.replace(name, &Default::default(), &want).await?;
        }
        None => match api.create(&Default::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}
