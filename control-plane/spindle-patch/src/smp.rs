//! Strategic merge patch (kubernetes/community sig-api-machinery/strategic-merge-patch.md).

use serde_json::{Map, Value};

use crate::strategy::{list_strategy, ListStrategy};
use crate::PatchError;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || key.starts_with(SET_ELEMENT_ORDER)
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.join(".")
    }
}

fn strategy_at(path: &[String]) -> ListStrategy {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    list_strategy(&names)
}

pub(crate) fn apply(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| invalid("strategic merge patch must be a JSON object"))?;
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(invalid(
                "strategic merge patch target must be a JSON object",
            ))
        }
    };
    let mut path = Vec::new();
    // A root-level `$patch: delete` leaves nothing behind; an empty object is the closest
    // thing to "no object" that still decodes.
    let merged = merge_map(original, patch, &mut path)?.unwrap_or_default();
    Ok(Value::Object(merged))
}

/// Merges `patch` into `original`. `None` means the map was deleted by `$patch: delete`.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(directive)) => match directive.as_str() {
            "merge" => {}
            // Replacing is merging into nothing: that still strips directives and nulls.
            "replace" => original = Map::new(),
            "delete" => return Ok(None),
            other => {
                return Err(invalid(format!(
                    "unknown $patch directive {other:?} at {}",
                    display(path)
                )))
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "$patch at {} must be a string, got {other}",
                display(path)
            )))
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        apply_retain_keys(&mut original, patch, retain, path)?;
    }

    // Deletions from primitive lists run before the merge so that a value both deleted and
    // re-added in one patch ends up present, as in Kubernetes.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let doomed = value.as_array().ok_or_else(|| {
                invalid(format!(
                    "{key} at {} must be a list, got {value}",
                    display(path)
                ))
            })?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|item| !doomed.contains(item));
            }
        }
    }

    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        path.push(key.clone());
        let current = original.get_mut(key).map(std::mem::take);
        let merged = merge_value(current, value, path)?;
        match merged {
            Some(v) => {
                original.insert(key.clone(), v);
            }
            None => {
                original.shift_remove(key);
            }
        }
        path.pop();
    }

    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let order = value.as_array().ok_or_else(|| {
                invalid(format!(
                    "{key} at {} must be a list, got {value}",
                    display(path)
                ))
            })?;
            path.push(field.to_string());
            let strategy = strategy_at(path);
            path.pop();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
    }

    Ok(Some(original))
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
    path: &[String],
) -> Result<(), PatchError> {
    let keys = retain
        .as_array()
        .ok_or_else(|| invalid(format!("$retainKeys at {} must be a list", display(path))))?;
    let mut retained = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.as_str().ok_or_else(|| {
            invalid(format!(
                "$retainKeys at {} must list strings, got {key}",
                display(path)
            ))
        })?;
        retained.push(key);
    }
    // A field set by the patch but not retained would be contradictory. Nulls are exempt:
    // kubectl sends `"rollingUpdate": null` next to `$retainKeys: ["type"]` when switching a
    // Deployment strategy to Recreate.
    for (key, value) in patch {
        if !is_directive(key) && !value.is_null() && !retained.contains(&key.as_str()) {
            return Err(invalid(format!(
                "field {key:?} at {} is not listed in $retainKeys",
                display(path)
            )));
        }
    }
    original.retain(|key, _| retained.contains(&key.as_str()));
    Ok(())
}

/// Merges one patch value over an optional original value. `None` means "remove the key".
fn merge_value(
    original: Option<Value>,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(patch_map) => {
            let base = match original {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            Ok(merge_map(base, patch_map, path)?.map(Value::Object))
        }
        Value::Array(patch_list) => {
            let base = match original {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            let strategy = strategy_at(path);
            Ok(Some(Value::Array(merge_list(
                base, patch_list, strategy, path,
            )?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

fn patch_directive(value: &Value) -> Option<&str> {
    value.as_object()?.get(PATCH)?.as_str()
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    // `{"$patch": "replace"}` as a list element means "the rest of this list is the whole
    // list", whatever the strategy.
    let replace = patch
        .iter()
        .any(|item| is_bare_directive(item) && patch_directive(item) == Some("replace"));
    if replace {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|item| !is_bare_directive(item))
            .cloned()
            .collect();
        return merge_list(Vec::new(), &rest, strategy, path);
    }
    // A bare `{"$patch": "merge"}` only restates the default; it must not become an element.
    let filtered: Vec<Value>;
    let patch = if patch.iter().any(is_bare_directive) {
        filtered = patch
            .iter()
            .filter(|item| !(is_bare_directive(item) && patch_directive(item) == Some("merge")))
            .cloned()
            .collect();
        filtered.as_slice()
    } else {
        patch
    };

    match strategy {
        ListStrategy::Replace => clean_list(patch, path),
        ListStrategy::MergePrimitives => {
            let mut result = original;
            for item in patch {
                if item.is_object() {
                    return Err(invalid(format!(
                        "list {} holds primitives but the patch has an object element",
                        display(path)
                    )));
                }
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
            Ok(result)
        }
        ListStrategy::MergeByKey(key) => merge_keyed_list(original, patch, key, path),
    }
}

fn is_bare_directive(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|map| map.len() == 1 && map.contains_key(PATCH))
}

/// Builds a list that replaces the original: nested maps still lose their nulls and
/// directives so no `$patch` key ever reaches storage.
fn clean_list(patch: &[Value], path: &mut Vec<String>) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for item in patch {
        match item {
            Value::Null => out.push(Value::Null),
            other => {
                if let Some(v) = merge_value(None, other, path)? {
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}

fn merge_keyed_list(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    // A patch of scalars for a keyed list cannot be merged; Kubernetes treats the patch as
    // authoritative there, so do the same rather than fail.
    if patch.iter().any(|item| !item.is_object()) {
        return clean_list(patch, path);
    }

    for item in patch {
        let Some(map) = item.as_object() else {
            continue;
        };
        let id = map.get(key);
        match patch_directive(item) {
            Some("delete") => {
                let id = id.ok_or_else(|| missing_key(key, path))?;
                original.retain(|o| o.get(key) != Some(id));
            }
            None | Some("merge") | Some("replace") => {
                let id = id.ok_or_else(|| missing_key(key, path))?;
                let position = original.iter().position(|o| o.get(key) == Some(id));
                match position {
                    Some(index) => {
                        let base = match std::mem::take(&mut original[index]) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        match merge_map(base, map, path)? {
                            Some(merged) => original[index] = Value::Object(merged),
                            None => {
                                original.remove(index);
                            }
                        }
                    }
                    None => {
                        if let Some(merged) = merge_map(Map::new(), map, path)? {
                            original.push(Value::Object(merged));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "unknown $patch directive {other:?} in list {}",
                    display(path)
                )))
            }
        }
    }
    Ok(original)
}

fn missing_key(key: &str, path: &[String]) -> PatchError {
    invalid(format!(
        "element of list {} is missing its merge key {key:?}",
        display(path)
    ))
}

/// Puts the elements named in `order` first, in that order; the others keep their relative
/// order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let identity = |v: &Value| -> Option<Value> {
        match strategy {
            ListStrategy::MergeByKey(key) => v.get(key).cloned(),
            ListStrategy::MergePrimitives => Some(v.clone()),
            ListStrategy::Replace => None,
        }
    };
    if strategy == ListStrategy::Replace {
        return;
    }
    let mut pending: Vec<Option<Value>> = std::mem::take(list).into_iter().map(Some).collect();
    let mut sorted = Vec::with_capacity(pending.len());
    for wanted in order {
        let Some(wanted) = identity(wanted) else {
            continue;
        };
        let found = pending
            .iter_mut()
            .find(|slot| slot.as_ref().and_then(&identity).as_ref() == Some(&wanted));
        if let Some(slot) = found {
            if let Some(item) = slot.take() {
                sorted.push(item);
            }
        }
    }
    sorted.extend(pending.into_iter().flatten());
    *list = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value) -> Value {
        apply(&original, &patch).unwrap()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "annotations": {"keep": "me"}},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1.0", "ports": [{"containerPort": 80}],
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                            {"name": "sidecar", "image": "envoy:1"}
                        ],
                        "volumes": [{"name": "v1", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    #[test]
    fn null_deletes_key_and_annotation_is_kept_verbatim() {
        let last_applied = "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"demo\",\"namespace\":\"default\"}}\n";
        let original = json!({"data": {"a": "1", "b": "2"}, "metadata": {"name": "demo"}});
        let patch = json!({"data": {"b": null},
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}}});
        let out = smp(original, patch);
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap(),
            last_applied
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"name": "web", "image": "nginx:2.0"}]
        }}}});
        let out = smp(deployment(), patch);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 2);
        assert_eq!(containers[0]["image"], "nginx:2.0");
        // Untouched fields of the merged container survive.
        assert_eq!(containers[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            containers[1],
            json!({"name": "sidecar", "image": "envoy:1"})
        );
        assert!(out["spec"]["template"]["spec"]
            .get("$setElementOrder/containers")
            .is_none());
        assert_eq!(out["metadata"]["annotations"]["keep"], "me");
    }

    #[test]
    fn new_keyed_element_is_appended_and_env_merges_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
            {"name": "extra", "image": "busybox"}
        ]}}}});
        let out = smp(deployment(), patch);
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 3);
        assert_eq!(containers[2]["name"], "extra");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn patch_delete_on_list_element() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}
        ]}}}});
        let out = smp(deployment(), patch);
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "web");
    }

    #[test]
    fn patch_replace_on_list_and_map() {
        let patch = json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "v2", "configMap": {"name": "c"}}, {"$patch": "replace"}],
            "containers": [{"name": "web", "$patch": "replace", "image": "httpd"}]
        }}}});
        let out = smp(deployment(), patch);
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"],
            json!([{"name": "v2", "configMap": {"name": "c"}}])
        );
        assert_eq!(
            spec["containers"][0],
            json!({"name": "web", "image": "httpd"})
        );
        assert_eq!(spec["containers"][1]["name"], "sidecar");

        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"labels": {"c": "3"}}})
        );
    }

    #[test]
    fn patch_delete_on_map() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate"}, "replicas": 1}});
        let patch = json!({"spec": {"strategy": {"$patch": "delete"}}});
        assert_eq!(smp(original, patch), json!({"spec": {"replicas": 1}}));
    }

    #[test]
    fn set_element_order_reorders_and_keeps_unmentioned_after() {
        let original = json!({"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "injected"}, {"name": "b", "image": "1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "3"}]
        }});
        let out = smp(original, patch);
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "a", "injected"]);
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn set_element_order_on_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["x", "y"]}});
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["z", "y", "x"],
            "finalizers": ["z"]
        }});
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"finalizers": ["z", "y", "x"]}})
        );
    }

    #[test]
    fn retain_keys_clears_other_fields() {
        let original = json!({"spec": {"strategy": {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}
        }}});
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null
        }}});
        assert_eq!(
            smp(original.clone(), patch),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );

        // Even without the explicit null, fields outside $retainKeys go.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            smp(original.clone(), patch),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );

        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "other": 1}}});
        assert!(matches!(
            apply(&original, &bad),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn delete_from_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"finalizers": ["a", "c"]}})
        );
    }

    #[test]
    fn primitive_merge_list_is_a_set_union() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}})
        );
    }

    #[test]
    fn unknown_lists_are_replaced() {
        let original = json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}],
            "tolerations": [{"key": "k"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "args": ["z"]}],
            "tolerations": [{"key": "j", "value": null}]}});
        assert_eq!(
            smp(original, patch),
            json!({"spec": {"containers": [{"name": "a", "args": ["z"]}],
                "tolerations": [{"key": "j"}]}})
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_container_ports_by_container_port() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}});
        assert_eq!(
            smp(original, patch)["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
        );
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 443}]}
        ]}}}});
        let out = smp(deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 443}])
        );
    }

    #[test]
    fn directives_inside_new_values_are_stripped() {
        let original = json!({});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "$patch": "merge", "env": [{"name": "X", "value": null}]}]
        }}}});
        assert_eq!(
            smp(original, patch),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}}})
        );
    }

    #[test]
    fn missing_merge_key_is_invalid() {
        let original = json!({"spec": {"containers": [{"name": "a"}]}});
        let patch = json!({"spec": {"containers": [{"image": "x"}]}});
        assert!(matches!(
            apply(&original, &patch),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn bad_directive_and_shapes_are_invalid() {
        let original = json!({"a": {}});
        assert!(apply(&original, &json!({"a": {"$patch": "explode"}})).is_err());
        assert!(apply(&original, &json!([1])).is_err());
        assert!(apply(&json!([1]), &json!({})).is_err());
    }

    #[test]
    fn key_order_is_preserved_on_delete() {
        let original = json!({"data": {"a": "1", "b": "2", "c": "3"}});
        let out = smp(original, json!({"data": {"a": null}}));
        let keys: Vec<&String> = out["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["b", "c"]);
    }

    #[test]
    fn bare_merge_directive_in_list_is_dropped() {
        let original =
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "x"}]}});
        let patch = json!({
            "metadata": {"finalizers": [{"$patch": "merge"}, "b"]},
            "spec": {"containers": [{"$patch": "merge"}, {"name": "y"}]}
        });
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "x"}, {"name": "y"}]}})
        );
    }

    #[test]
    fn kubectl_three_way_patch_for_deployment_image() {
        // Shape produced by `kubectl apply` after editing the image in the manifest.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"x\":1}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:3", "name": "web"}]
            }}}
        });
        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:3");
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"x\":1}\n");
        assert_eq!(smp(deployment(), patch), expected);
    }

    #[test]
    fn conditions_merge_by_type() {
        let original = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}
        ]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            smp(original, patch)["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}])
        );
    }
}
