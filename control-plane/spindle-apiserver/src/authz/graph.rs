//! The Node authorizer's graph (kube's `plugin/pkg/auth/authorizer/node` graph): which
//! objects the pods bound to each node reference, kept from the store's watch of pods
//! and PersistentVolumeClaims, so a node's request for a Secret is a few hash lookups.
//!
//! A pod bound to a node references its ServiceAccount, the Secrets and ConfigMaps its
//! volumes (projected ones included), environment (`env`, `envFrom`) and
//! `imagePullSecrets` name, and its claims (`persistentVolumeClaim` volumes and the
//! claims of `ephemeral` volumes, named `<pod>-<volume>`). A claim bound to a volume
//! leads on to that PersistentVolume.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// The kinds of object a node reaches through its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vertex {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

/// A namespaced object a pod references.
type Ref = (Vertex, String, String);
type NsName = (String, String);

#[derive(Default)]
pub struct Graph {
    /// Bound pods: their node and what they reference.
    pods: HashMap<NsName, (String, Vec<Ref>)>,
    /// node -> referenced object -> how many of the node's pods reference it.
    by_node: HashMap<String, HashMap<Ref, u32>>,
    /// claim -> the volume it is bound to.
    claim_volume: HashMap<NsName, String>,
    /// volume -> the claims bound to it.
    volume_claims: HashMap<String, HashSet<NsName>>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Everything `pod` references, deduplicated (kube's VisitPodSecretNames,
/// VisitPodConfigmapNames and the claim and ServiceAccount edges of AddPod).
pub fn references(pod: &Value) -> Vec<Ref> {
    let ns = text(pod, "/metadata/namespace");
    let pod_name = text(pod, "/metadata/name");
    let mut out: Vec<(Vertex, &str)> = Vec::new();
    let sa = text(pod, "/spec/serviceAccountName");
    out.push((
        Vertex::ServiceAccount,
        if sa.is_empty() { "default" } else { sa },
    ));
    for s in items(pod, "/spec/imagePullSecrets") {
        out.push((Vertex::Secret, text(s, "/name")));
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(pod, &format!("/spec/{list}")) {
            for e in items(c, "/env") {
                out.push((Vertex::Secret, text(e, "/valueFrom/secretKeyRef/name")));
                out.push((
                    Vertex::ConfigMap,
                    text(e, "/valueFrom/configMapKeyRef/name"),
                ));
            }
            for e in items(c, "/envFrom") {
                out.push((Vertex::Secret, text(e, "/secretRef/name")));
                out.push((Vertex::ConfigMap, text(e, "/configMapRef/name")));
            }
        }
    }
    let mut ephemeral = Vec::new();
    for v in items(pod, "/spec/volumes") {
        out.push((Vertex::Secret, text(v, "/secret/secretName")));
        out.push((Vertex::ConfigMap, text(v, "/configMap/name")));
        out.push((Vertex::Claim, text(v, "/persistentVolumeClaim/claimName")));
        for src in items(v, "/projected/sources") {
            out.push((Vertex::Secret, text(src, "/secret/name")));
            out.push((Vertex::ConfigMap, text(src, "/configMap/name")));
        }
        // Volume plugins that name a Secret for their credentials.
        for p in [
            "/azureFile/secretName",
            "/cephfs/secretRef/name",
            "/cinder/secretRef/name",
            "/flexVolume/secretRef/name",
            "/iscsi/secretRef/name",
            "/rbd/secretRef/name",
            "/scaleIO/secretRef/name",
            "/storageos/secretRef/name",
            "/csi/nodePublishSecretRef/name",
        ] {
            out.push((Vertex::Secret, text(v, p)));
        }
        if v.get("ephemeral").is_some_and(|e| !e.is_null()) {
            ephemeral.push(format!("{pod_name}-{}", text(v, "/name")));
        }
    }
    let mut refs: Vec<Ref> = out
        .into_iter()
        .filter(|(_, n)| !n.is_empty())
        .map(|(k, n)| (k, ns.to_string(), n.to_string()))
        .chain(
            ephemeral
                .into_iter()
                .map(|n| (Vertex::Claim, ns.to_string(), n)),
        )
        .collect();
    refs.sort_by(|a, b| (a.0 as u8, &a.1, &a.2).cmp(&(b.0 as u8, &b.1, &b.2)));
    refs.dedup();
    refs
}

fn ns_name(obj: &Value) -> NsName {
    (
        text(obj, "/metadata/namespace").to_string(),
        text(obj, "/metadata/name").to_string(),
    )
}

impl Graph {
    /// Take in a pod as it now is (`present`) or its removal.
    pub fn apply_pod(&mut self, pod: &Value, present: bool) {
        let key = ns_name(pod);
        let node = text(pod, "/spec/nodeName");
        let now = (present && !node.is_empty()).then(|| (node.to_string(), references(pod)));
        if self.pods.get(&key) == now.as_ref() {
            return;
        }
        if let Some((old_node, old_refs)) = self.pods.remove(&key) {
            self.unlink(&old_node, &old_refs);
        }
        if let Some((node, refs)) = now {
            let counts = self.by_node.entry(node.clone()).or_default();
            for r in &refs {
                *counts.entry(r.clone()).or_default() += 1;
            }
            self.pods.insert(key, (node, refs));
        }
    }

    fn unlink(&mut self, node: &str, refs: &[Ref]) {
        let Some(counts) = self.by_node.get_mut(node) else {
            return;
        };
        for r in refs {
            if let Some(n) = counts.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(r);
                }
            }
        }
        if counts.is_empty() {
            self.by_node.remove(node);
        }
    }

    /// Take in a claim as it now is (`present`) or its removal: the volume it is bound to.
    pub fn apply_claim(&mut self, claim: &Value, present: bool) {
        let key = ns_name(claim);
        if let Some(old) = self.claim_volume.remove(&key) {
            if let Some(set) = self.volume_claims.get_mut(&old) {
                set.remove(&key);
                if set.is_empty() {
                    self.volume_claims.remove(&old);
                }
            }
        }
        let volume = text(claim, "/spec/volumeName");
        if present && !volume.is_empty() {
            self.volume_claims
                .entry(volume.to_string())
                .or_default()
                .insert(key.clone());
            self.claim_volume.insert(key, volume.to_string());
        }
    }

    pub fn clear_pods(&mut self) {
        self.pods.clear();
        self.by_node.clear();
    }

    pub fn clear_claims(&mut self) {
        self.claim_volume.clear();
        self.volume_claims.clear();
    }

    /// Whether a pod bound to `node` references the object.
    pub fn references(&self, node: &str, kind: Vertex, ns: &str, name: &str) -> bool {
        self.by_node
            .get(node)
            .is_some_and(|c| c.contains_key(&(kind, ns.to_string(), name.to_string())))
    }

    /// Whether a pod bound to `node` uses a claim bound to the PersistentVolume `pv`.
    pub fn reaches_volume(&self, node: &str, pv: &str) -> bool {
        self.volume_claims.get(pv).is_some_and(|claims| {
            claims
                .iter()
                .any(|(ns, c)| self.references(node, Vertex::Claim, ns, c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec})
    }

    fn full_spec() -> Value {
        json!({
            "serviceAccountName": "runner",
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "containers": [{"name": "c",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                        {"name": "C", "value": "plain"}],
                "envFrom": [{"secretRef": {"name": "envfrom-secret"}}]}],
            "ephemeralContainers": [{"name": "e", "envFrom": [{"secretRef": {"name": "debug-secret"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "m", "configMap": {"name": "vol-cm"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "p", "projected": {"sources": [
                    {"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "c", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}}
            ]
        })
    }

    #[test]
    fn a_pod_reaches_every_object_it_names_and_nothing_else() {
        let mut g = Graph::default();
        g.apply_pod(&pod("web", "a", full_spec()), true);
        for s in [
            "pull",
            "env-secret",
            "envfrom-secret",
            "debug-secret",
            "vol-secret",
            "proj-secret",
            "csi-secret",
        ] {
            assert!(g.references("a", Vertex::Secret, "ns", s), "{s}");
            assert!(!g.references("b", Vertex::Secret, "ns", s), "{s} from b");
            assert!(
                !g.references("a", Vertex::Secret, "other", s),
                "{s} in other"
            );
        }
        for c in ["init-cm", "env-cm", "vol-cm", "proj-cm"] {
            assert!(g.references("a", Vertex::ConfigMap, "ns", c), "{c}");
            assert!(
                !g.references("a", Vertex::Secret, "ns", c),
                "{c} as a secret"
            );
        }
        assert!(g.references("a", Vertex::Claim, "ns", "data"));
        assert!(g.references("a", Vertex::Claim, "ns", "web-scratch"));
        assert!(g.references("a", Vertex::ServiceAccount, "ns", "runner"));
        assert!(!g.references("a", Vertex::ServiceAccount, "ns", "default"));
        assert!(!g.references("a", Vertex::Secret, "ns", "unrelated"));
    }

    #[test]
    fn unbound_pods_reach_nothing_and_default_service_account_is_implied() {
        let mut g = Graph::default();
        let spec = json!({"volumes": [{"name": "s", "secret": {"secretName": "s1"}}]});
        g.apply_pod(&pod("p", "", spec.clone()), true);
        assert!(!g.references("", Vertex::Secret, "ns", "s1"));
        g.apply_pod(&pod("p", "a", spec), true);
        assert!(g.references("a", Vertex::Secret, "ns", "s1"));
        assert!(g.references("a", Vertex::ServiceAccount, "ns", "default"));
    }

    #[test]
    fn edges_follow_updates_and_deletions_with_shared_references_counted() {
        let mut g = Graph::default();
        let uses = |s: &str| json!({"volumes": [{"name": "s", "secret": {"secretName": s}}]});
        g.apply_pod(&pod("p1", "a", uses("shared")), true);
        g.apply_pod(&pod("p2", "a", uses("shared")), true);
        g.apply_pod(&pod("p1", "a", uses("shared")), false);
        assert!(
            g.references("a", Vertex::Secret, "ns", "shared"),
            "p2 still uses it"
        );
        // p2 moves to another secret: the old edge goes.
        g.apply_pod(&pod("p2", "a", uses("new")), true);
        assert!(!g.references("a", Vertex::Secret, "ns", "shared"));
        assert!(g.references("a", Vertex::Secret, "ns", "new"));
        // A (re)created pod on another node moves the edge with it.
        g.apply_pod(&pod("p2", "b", uses("new")), true);
        assert!(!g.references("a", Vertex::Secret, "ns", "new"));
        assert!(g.references("b", Vertex::Secret, "ns", "new"));
        g.apply_pod(&pod("p2", "b", uses("new")), false);
        assert!(g.by_node.is_empty() && g.pods.is_empty());
    }

    #[test]
    fn volumes_are_reached_through_bound_claims() {
        let mut g = Graph::default();
        let spec =
            json!({"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]});
        g.apply_pod(&pod("p", "a", spec), true);
        let claim = |vol: &str| json!({"metadata": {"namespace": "ns", "name": "data"}, "spec": {"volumeName": vol}});
        assert!(!g.reaches_volume("a", "pv-1"), "claim not bound yet");
        g.apply_claim(&claim("pv-1"), true);
        assert!(g.reaches_volume("a", "pv-1"));
        assert!(!g.reaches_volume("b", "pv-1"));
        assert!(!g.reaches_volume("a", "pv-2"));
        g.apply_claim(&claim("pv-1"), false);
        assert!(!g.reaches_volume("a", "pv-1"));
        assert!(g.volume_claims.is_empty());
    }
}
