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
