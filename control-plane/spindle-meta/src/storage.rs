//! Persistent storage names several crates share: the annotations and finalizers the
//! API server, the PV binder, the scheduler and the agent read and write, and the
//! built-in local-path class (as k3s ships one).

use serde_json::Value;

/// On a StorageClass: claims without a class get this one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The class of a PV or PVC before `storageClassName` existed; it wins over the field.
pub const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// On a claim: the binder has finished binding it.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder (not the user) set the other half of the binding.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that created it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the provisioner asked to provision it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// On a claim: the provisioner asked to provision it (the beta name, still written).
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a WaitForFirstConsumer claim: the node the scheduler chose for its first pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// A claim is not deleted while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// A volume is not deleted while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The built-in StorageClass and its provisioner.
pub const LOCAL_PATH_CLASS: &str = "local-path";
pub const LOCAL_PATH_PROVISIONER: &str = "spindle.dev/local-path";
/// On a Node: the directory its agent keeps local-path volumes in, one per volume named
/// after it (the provisioner writes it into the volumes it makes for the node).
pub const LOCAL_PATH_ROOT: &str = "spindle.dev/local-path-root";

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// `storageutil.IsDefaultAnnotation`: the GA or the beta annotation set to "true".
pub fn is_default_class(class: &Value) -> bool {
    [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
        .iter()
        .any(|k| annotation(class, k) == Some("true"))
}

/// `GetPersistentVolume(Claim)Class`: the beta annotation, else `spec.storageClassName`,
/// else "" (no class).
pub fn class_of(obj: &Value) -> &str {
    annotation(obj, BETA_CLASS_ANNOTATION)
        .or_else(|| {
            obj.pointer("/spec/storageClassName")
                .and_then(Value::as_str)
        })
        .unwrap_or("")
}

fn typed_annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// [`class_of`] for a typed PersistentVolumeClaim.
pub fn claim_class(pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> &str {
    typed_annotation(&pvc.metadata, BETA_CLASS_ANNOTATION)
        .or_else(|| pvc.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// [`class_of`] for a typed PersistentVolume.
pub fn volume_class(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> &str {
    typed_annotation(&pv.metadata, BETA_CLASS_ANNOTATION)
        .or_else(|| pv.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The node a volume of the built-in local-path provisioner lives on: the one its
/// required node affinity names. None for any other volume.
pub fn local_path_node(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Option<&str> {
    if typed_annotation(&pv.metadata, PROVISIONED_BY) != Some(LOCAL_PATH_PROVISIONER) {
        return None;
    }
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_expressions.iter().flatten().find_map(|e| {
            (e.key == "kubernetes.io/hostname" && e.operator == "In")
                .then(|| e.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_beta_annotation_names_the_class_before_the_field() {
        let pvc = json!({"metadata": {"annotations": {BETA_CLASS_ANNOTATION: "old"}},
            "spec": {"storageClassName": "new"}});
        assert_eq!(class_of(&pvc), "old");
        assert_eq!(
            class_of(&json!({"spec": {"storageClassName": "new"}})),
            "new"
        );
        assert_eq!(class_of(&json!({"spec": {}})), "");
    }

    #[test]
    fn only_true_makes_a_class_the_default() {
        let c = |v: &str| json!({"metadata": {"annotations": {DEFAULT_CLASS_ANNOTATION: v}}});
        assert!(is_default_class(&c("true")));
        assert!(!is_default_class(&c("True")));
        assert!(!is_default_class(&json!({"metadata": {}})));
    }
}
