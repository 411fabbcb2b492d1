//! A container's environment, as the kubelet builds it: envFrom first, then env in order,
//! with `$(VAR)` references expanded against what came before; values from ConfigMaps,
//! Secrets, the pod's own fields and its resources.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::Api;

/// Why a container's config could not be built (reason CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// ConfigMaps and Secrets read while building one pod's containers, fetched once each.
pub struct Sources {
    client: kube::Client,
    ns: String,
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    /// The node's ServiceAccount tokens, for projected volumes.
    tokens: Option<std::sync::Arc<crate::tokens::TokenManager>>,
}

impl Sources {
    pub fn new(client: kube::Client, ns: &str) -> Self {
        Sources {
            client,
            ns: ns.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            tokens: None,
        }
    }

    /// Sources that can also give the pod's ServiceAccount tokens.
    pub fn with_tokens(mut self, tokens: std::sync::Arc<crate::tokens::TokenManager>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// A ServiceAccount token bound to `pod` (see [`crate::tokens`]).
    pub async fn service_account_token(
        &self,
        pod: &Pod,
        audience: &str,
        seconds: Option<i64>,
    ) -> Result<String, ConfigError> {
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            ConfigError("no token manager for serviceAccountToken volumes".into())
        })?;
        tokens.token(&self.client, pod, audience, seconds).await
    }

    /// The data of a ConfigMap (binaryData as lossy text), None if it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(v) = self.config_maps.get(name) {
            return Ok(v.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let v = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading configmap {name:?}: {e}")))?
            .map(|cm| {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            });
        self.config_maps.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// The data of a Secret as raw bytes per key.
    pub async fn secret_bytes(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let s = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading secret {name:?}: {e}")))?;
        Ok(s.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }

    /// A PersistentVolumeClaim of the pod's namespace, None if it does not exist.
    pub async fn claim(&self, name: &str) -> Result<Option<PersistentVolumeClaim>, ConfigError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        api.get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading persistentvolumeclaim {name:?}: {e}")))
    }

    /// A PersistentVolume, None if it does not exist.
    pub async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, ConfigError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading persistentvolume {name:?}: {e}")))
    }

    /// The variables of the `kubernetes` Service in `default`, which the kubelet gives
    /// every container (whatever `enableServiceLinks` says) so in-cluster clients find
    /// the API server. None when the Service does not exist or cannot be read.
    async fn api_server_env(&self) -> Vec<(String, String)> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        match api.get_opt("kubernetes").await {
            Ok(Some(svc)) => service_env(&svc),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!(error = %e, "reading the kubernetes Service for the pod's environment");
                Vec::new()
            }
        }
    }

    async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(v) = self.secrets.get(name) {
            return Ok(v.clone());
        }
        let v = self.secret_bytes(name).await?.map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        });
        self.secrets.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

/// Expand `$(NAME)` from `vars`; `$$(NAME)` escapes to a literal `$(NAME)`; references to
/// unknown names stay as written (Kubernetes' rules).
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars(name) {
                        out.push_str(&v);
                        i += end + 3;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// The value of a downward API field path, as the kubelet gives it.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracket = |p: &str, prefix: &str| -> Option<String> {
        p.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
        p => {
            if let Some(k) = bracket(p, "metadata.labels['") {
                return Some(
                    meta.labels
                        .as_ref()
                        .and_then(|m| m.get(&k).cloned())
                        .unwrap_or_default(),
                );
            }
            if let Some(k) = bracket(p, "metadata.annotations['") {
                return Some(
                    meta.annotations
                        .as_ref()
                        .and_then(|m| m.get(&k).cloned())
                        .unwrap_or_default(),
                );
            }
            None
        }
    }
}

/// `key="value"` lines, sorted, as the downward API writes label and annotation files.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// A Service's variables as the kubelet writes them, in the docker-links style:
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (and one per named port), and
/// `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`. Headless Services
/// have none.
pub fn service_env(svc: &Service) -> Vec<(String, String)> {
    let name = svc
        .metadata
        .name
        .as_deref()
        .unwrap_or("")
        .to_ascii_uppercase()
        .replace('-', "_");
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return Vec::new();
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.as_deref().unwrap_or("TCP").to_string()
    };
    let mut out = vec![
        (format!("{name}_SERVICE_HOST"), ip.to_string()),
        (format!("{name}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!(
                    "{name}_SERVICE_PORT_{}",
                    n.to_ascii_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
    }
    out.push((
        format!("{name}_PORT"),
        format!(
            "{}://{ip}:{}",
            proto(first).to_ascii_lowercase(),
            first.port
        ),
    ));
    for p in ports {
        let (upper, lower) = (proto(p).to_ascii_uppercase(), proto(p).to_ascii_lowercase());
        let prefix = format!("{name}_PORT_{}_{upper}", p.port);
        out.push((prefix.clone(), format!("{lower}://{ip}:{}", p.port)));
        out.push((format!("{prefix}_PROTO"), lower));
        out.push((format!("{prefix}_PORT"), p.port.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.to_string()));
    }
    out
}

/// Build a container's environment.
pub async fn build(
    pod: &Pod,
    c: &Container,
    src: &mut Sources,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    // The Service variables come first: the container's own may refer to them and
    // override them.
    let mut vars: Vec<(String, String)> = src.api_server_env().await;
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                src.config_map(&r.name).await?,
                "configmap",
                r.name.clone(),
                r.optional.unwrap_or(false),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                src.secret(&r.name).await?,
                "secret",
                r.name.clone(),
                r.optional.unwrap_or(false),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{what} {name:?} not found"))),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let snapshot = vars.clone();
            expand(v, &|n| {
                snapshot
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                match src.config_map(&r.name).await? {
                    Some(m) => match m.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, src.ns, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match src.secret(&r.name).await? {
                    Some(m) => match m.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, src.ns, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
                }
            } else if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                    ConfigError(format!("unsupported fieldPath {:?}", f.field_path))
                })?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(n) if !n.is_empty() => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|c| c.name == n))
                        .ok_or_else(|| ConfigError(format!("container {n:?} not found")))?,
                    _ => c,
                };
                crate::resources::field_value(target, &r.resource, r.divisor.as_ref())?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_variables_are_the_kubelets() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.1",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        }))
        .expect("service");
        let vars = service_env(&svc);
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let want = [
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn expands_references() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("héllo $(A)", &vars), "héllo x");
    }
}
