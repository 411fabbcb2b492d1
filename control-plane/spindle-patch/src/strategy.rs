//! How lists of built-in kinds merge, keyed by the field path from the object root.
//!
//! The table mirrors the `patchStrategy`/`patchMergeKey` struct tags of the Kubernetes API
//! types (published as `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key`). Both
//! strategic merge patch and server-side apply read it, so the two agree on which lists are
//! associative.
//!
//! Pod specs appear under many kinds (Pod, Deployment, CronJob's job template, ...), so
//! pod-spec rules match on the tail of the path rather than the whole path.

/// How a list field is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch (or applied) list replaces the original wholesale; SSA owns it as one leaf.
    Replace,
    /// Elements are maps identified by the named key field.
    MergeByKey(&'static str),
    /// Elements are scalars merged as a set.
    MergePrimitives,
}

const POD_CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Looks up the merge strategy of the list at `path`: field names from the object root with
/// list indices left out, e.g. `["spec", "template", "spec", "containers"]`.
pub fn list_strategy(path: &[&str]) -> ListStrategy {
    use ListStrategy::*;

    // Whole-path rules first: these field names are too generic to match by suffix.
    match path {
        ["spec", "ports"] => return MergeByKey("port"),
        ["spec", "taints"] => return MergeByKey("key"),
        ["status", "addresses"] => return MergeByKey("type"),
        ["subsets"] => return Replace,
        // ServiceAccount.secrets
        ["secrets"] => return MergeByKey("name"),
        _ => {}
    }

    let n = path.len();
    let last = match path.last() {
        Some(last) => *last,
        None => return Replace,
    };
    let parent = if n >= 2 { path[n - 2] } else { "" };
    let grandparent = if n >= 3 { path[n - 3] } else { "" };

    // Fields of a container inside a pod spec.
    if POD_CONTAINER_LISTS.contains(&parent) && grandparent == "spec" {
        return match last {
            "env" => MergeByKey("name"),
            "volumeMounts" => MergeByKey("mountPath"),
            "volumeDevices" => MergeByKey("devicePath"),
            "ports" => MergeByKey("containerPort"),
            _ => Replace,
        };
    }

    // Fields of a pod spec.
    if parent == "spec" {
        match last {
            "containers" | "initContainers" | "ephemeralContainers" => return MergeByKey("name"),
            "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => {
                return MergeByKey("name")
            }
            "hostAliases" => return MergeByKey("ip"),
            "topologySpreadConstraints" => return MergeByKey("topologyKey"),
            _ => {}
        }
    }

    match (parent, last) {
        ("metadata", "ownerReferences") => MergeByKey("uid"),
        ("metadata", "finalizers") => MergePrimitives,
        ("status", "conditions") => MergeByKey("type"),
        ("status", "podIPs") | ("status", "hostIPs") => MergeByKey("ip"),
        _ => Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::ListStrategy::*;
    use super::*;

    #[test]
    fn pod_spec_lists_match_under_any_template_depth() {
        assert_eq!(list_strategy(&["spec", "containers"]), MergeByKey("name"));
        assert_eq!(
            list_strategy(&["spec", "template", "spec", "initContainers"]),
            MergeByKey("name")
        );
        assert_eq!(
            list_strategy(&[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
                "env"
            ]),
            MergeByKey("name")
        );
        assert_eq!(
            list_strategy(&["spec", "containers", "volumeMounts"]),
            MergeByKey("mountPath")
        );
        assert_eq!(
            list_strategy(&["spec", "containers", "volumeDevices"]),
            MergeByKey("devicePath")
        );
        assert_eq!(
            list_strategy(&["spec", "template", "spec", "volumes"]),
            MergeByKey("name")
        );
        assert_eq!(list_strategy(&["spec", "hostAliases"]), MergeByKey("ip"));
        assert_eq!(
            list_strategy(&["spec", "topologySpreadConstraints"]),
            MergeByKey("topologyKey")
        );
        assert_eq!(
            list_strategy(&["spec", "schedulingGates"]),
            MergeByKey("name")
        );
    }

    #[test]
    fn ports_depend_on_context() {
        assert_eq!(
            list_strategy(&["spec", "containers", "ports"]),
            MergeByKey("containerPort")
        );
        assert_eq!(list_strategy(&["spec", "ports"]), MergeByKey("port"));
        assert_eq!(list_strategy(&["subsets", "ports"]), Replace);
    }

    #[test]
    fn metadata_and_status_lists() {
        assert_eq!(list_strategy(&["metadata", "finalizers"]), MergePrimitives);
        assert_eq!(
            list_strategy(&["spec", "template", "metadata", "ownerReferences"]),
            MergeByKey("uid")
        );
        assert_eq!(list_strategy(&["status", "conditions"]), MergeByKey("type"));
        assert_eq!(list_strategy(&["status", "addresses"]), MergeByKey("type"));
        assert_eq!(list_strategy(&["spec", "taints"]), MergeByKey("key"));
    }

    #[test]
    fn unknown_lists_replace() {
        assert_eq!(list_strategy(&["subsets"]), Replace);
        assert_eq!(list_strategy(&["spec", "containers", "args"]), Replace);
        assert_eq!(list_strategy(&["spec", "tolerations"]), Replace);
        assert_eq!(list_strategy(&[]), Replace);
    }
}
