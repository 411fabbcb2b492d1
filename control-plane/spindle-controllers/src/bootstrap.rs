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
