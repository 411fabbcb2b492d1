use super::*;
use serde_json::json;

const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-01T00:05:00Z";

fn configmap(data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "demo", "namespace": "default"},
        "data": data
    })
}

fn entries(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fields_of(object: &Value, manager: &str, operation: &str) -> Option<Value> {
    entries(object)
        .into_iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
}

fn apply_ok(live: Option<&Value>, applied: &Value, manager: &str, force: bool) -> Value {
    match apply(live, applied, manager, "v1", force, NOW) {
        Ok(v) => v,
        Err(e) => panic!("apply failed: {e}"),
    }
}

#[test]
fn create_records_apply_entry() {
    let out = apply_ok(None, &configmap(json!({"a": "1"})), "kubectl", false);
    assert_eq!(out["data"], json!({"a": "1"}));
    assert_eq!(out["metadata"]["name"], "demo");
    assert_eq!(
        entries(&out),
        vec![json!({
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}}
        })]
    );
}

#[test]
fn associative_lists_are_keyed_in_fields_v1() {
    let applied = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1", "args": ["-g", "daemon off;"]}
            ]}}
        }
    });
    let out = apply(None, &applied, "kubectl", "apps/v1", false, NOW).unwrap();
    assert_eq!(
        fields_of(&out, "kubectl", "Apply").unwrap(),
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"nginx\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        })
    );
}

#[test]
fn rejects_managed_fields_in_body() {
    let mut applied = configmap(json!({"a": "1"}));
    applied["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(None, &applied, "kubectl", "v1", false, NOW),
        Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".to_string()
        ))
    );
}

#[test]
fn rejects_missing_merge_key_and_duplicates() {
    let applied = json!({"spec": {"containers": [{"image": "x"}]}});
    assert!(matches!(
        apply(None, &applied, "m", "v1", false, NOW),
        Err(ApplyError::Invalid(_))
    ));
    let applied = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
    assert!(matches!(
        apply(None, &applied, "m", "v1", false, NOW),
        Err(ApplyError::Invalid(_))
    ));
}

#[test]
fn two_appliers_conflict_on_data_a() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let err = apply(
        Some(&live),
        &configmap(json!({"a": "2"})),
        "bob",
        "v1",
        false,
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "alice".into(),
            field: ".data.a".into()
        }])
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
    );
}

#[test]
fn same_value_is_shared_not_a_conflict() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let out = apply_ok(
        Some(&live),
        &configmap(json!({"a": "1", "b": "2"})),
        "bob",
        false,
    );
    assert_eq!(
        fields_of(&out, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        fields_of(&out, "bob", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
}

#[test]
fn force_moves_ownership() {
    let live = apply_ok(
        None,
        &configmap(json!({"a": "1", "c": "3"})),
        "alice",
        false,
    );
    let out = apply_ok(Some(&live), &configmap(json!({"a": "2"})), "bob", true);
    assert_eq!(out["data"], json!({"a": "2", "c": "3"}));
    assert_eq!(
        fields_of(&out, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:c": {}}})
    );
    assert_eq!(
        fields_of(&out, "bob", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );

    // A manager that loses its last field disappears.
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let out = apply_ok(Some(&live), &configmap(json!({"a": "2"})), "bob", true);
    assert!(fields_of(&out, "alice", "Apply").is_none());
    assert_eq!(entries(&out).len(), 1);
}

#[test]
fn conflict_with_client_side_apply_update_manager() {
    let mut created = configmap(json!({"a": "1"}));
    record_update(None, &mut created, "kubectl-client-side-apply", "v1", NOW);
    let err = apply(
        Some(&created),
        &configmap(json!({"a": "4"})),
        "kubectl",
        "v1",
        false,
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "kubectl-client-side-apply".into(),
            field: ".data.a".into()
        }])
    );
}

#[test]
fn container_conflict_field_uses_kubernetes_path_syntax() {
    let deployment = |image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}
        })
    };
    let live = apply_ok(None, &deployment("nginx:1"), "alice", false);
    let err = apply(
        Some(&live),
        &deployment("nginx:2"),
        "bob",
        "apps/v1",
        false,
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "alice".into(),
            field: ".spec.template.spec.containers[name=\"web\"].image".into()
        }])
    );
}

#[test]
fn fields_no_longer_applied_are_removed() {
    let live = apply_ok(
        None,
        &configmap(json!({"a": "1", "b": "2"})),
        "alice",
        false,
    );
    let out = apply_ok(Some(&live), &configmap(json!({"a": "1"})), "alice", false);
    assert_eq!(out["data"], json!({"a": "1"}));
    assert_eq!(
        fields_of(&out, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );
}

#[test]
fn fields_owned_by_someone_else_survive_removal() {
    let live = apply_ok(
        None,
        &configmap(json!({"a": "1", "b": "2"})),
        "alice",
        false,
    );
    let live = apply_ok(Some(&live), &configmap(json!({"b": "2"})), "bob", false);
    let out = apply_ok(Some(&live), &configmap(json!({"a": "1"})), "alice", false);
    assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
}

#[test]
fn list_items_no_longer_applied_are_removed() {
    let pod = |containers: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": containers}})
    };
    let live = apply_ok(
        None,
        &pod(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])),
        "alice",
        false,
    );
    // Another manager adds a container of its own: it must survive alice's next apply.
    let live = apply_ok(
        Some(&live),
        &pod(json!([{"name": "sidecar", "image": "z"}])),
        "injector",
        false,
    );
    let out = apply_ok(
        Some(&live),
        &pod(json!([{"name": "a", "image": "x2"}])),
        "alice",
        false,
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "x2"}, {"name": "sidecar", "image": "z"}])
    );
}

#[test]
fn finalizers_are_a_set() {
    let applied = json!({"metadata": {"name": "x", "finalizers": ["a/b"]}});
    let live = apply_ok(None, &applied, "alice", false);
    let live = apply_ok(
        Some(&live),
        &json!({"metadata": {"name": "x", "finalizers": ["c/d"]}}),
        "bob",
        false,
    );
    assert_eq!(live["metadata"]["finalizers"], json!(["a/b", "c/d"]));
    assert_eq!(
        fields_of(&live, "bob", "Apply").unwrap(),
        json!({"f:metadata": {"f:finalizers": {"v:\"c/d\"": {}}}})
    );
}

#[test]
fn record_update_on_create_owns_everything() {
    let mut created = configmap(json!({"a": "1"}));
    created["metadata"]["labels"] = json!({"x": "y"});
    record_update(None, &mut created, "kubectl-create", "v1", NOW);
    assert_eq!(
        entries(&created),
        vec![json!({
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:x": {}}}}
        })]
    );
}

#[test]
fn record_update_moves_ownership() {
    let live = apply_ok(
        None,
        &configmap(json!({"a": "1", "b": "2"})),
        "alice",
        false,
    );

    let mut edited = live.clone();
    edited["data"]["a"] = json!("5");
    record_update(Some(&live), &mut edited, "editor", "v1", LATER);
    assert_eq!(
        fields_of(&edited, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:b": {}}})
    );
    assert_eq!(
        fields_of(&edited, "editor", "Update").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );
    let editor = entries(&edited)
        .into_iter()
        .find(|e| e["manager"] == "editor")
        .unwrap();
    assert_eq!(editor["time"], LATER);

    // Removing b takes it from alice, who then owns nothing and is dropped.
    let mut trimmed = edited.clone();
    if let Some(data) = trimmed["data"].as_object_mut() {
        data.shift_remove("b");
    }
    record_update(Some(&edited), &mut trimmed, "editor", "v1", LATER);
    assert!(fields_of(&trimmed, "alice", "Apply").is_none());
    assert_eq!(entries(&trimmed).len(), 1);

    // After the edit alice no longer owns a, so applying a new value there is no conflict
    // with herself but is one with the editor.
    let err = apply(
        Some(&edited),
        &configmap(json!({"a": "1", "b": "2"})),
        "alice",
        "v1",
        false,
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "editor".into(),
            field: ".data.a".into()
        }])
    );
}

#[test]
fn record_update_without_manager_is_a_no_op() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let mut edited = live.clone();
    edited["data"]["a"] = json!("2");
    let before = edited.clone();
    record_update(Some(&live), &mut edited, "", "v1", LATER);
    assert_eq!(edited, before);
}

#[test]
fn record_update_carries_stored_managed_fields_over_a_put_without_them() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let mut put = configmap(json!({"a": "1", "b": "2"}));
    record_update(Some(&live), &mut put, "editor", "v1", LATER);
    assert_eq!(
        fields_of(&put, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        fields_of(&put, "editor", "Update").unwrap(),
        json!({"f:data": {"f:b": {}}})
    );
}

#[test]
fn record_update_keyed_list_changes() {
    let old = json!({"spec": {"containers": [{"name": "web", "image": "1"}]}});
    let mut new = json!({"spec": {"containers": [{"name": "web", "image": "2"}, {"name": "side", "image": "s"}]}});
    record_update(Some(&old), &mut new, "kubectl-set", "v1", NOW);
    assert_eq!(
        fields_of(&new, "kubectl-set", "Update").unwrap(),
        json!({"f:spec": {"f:containers": {
            "k:{\"name\":\"side\"}": {".": {}, "f:image": {}, "f:name": {}},
            "k:{\"name\":\"web\"}": {"f:image": {}}
        }}})
    );
}

#[test]
fn server_metadata_in_applied_is_ignored() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let mut live = live;
    live["metadata"]["resourceVersion"] = json!("7");
    live["metadata"]["uid"] = json!("u-1");
    let mut applied = configmap(json!({"a": "1"}));
    applied["metadata"]["resourceVersion"] = json!("3");
    applied["metadata"]["uid"] = json!("other");
    let out = apply_ok(Some(&live), &applied, "alice", false);
    assert_eq!(out["metadata"]["resourceVersion"], "7");
    assert_eq!(out["metadata"]["uid"], "u-1");
    assert_eq!(
        fields_of(&out, "alice", "Apply").unwrap(),
        json!({"f:data": {"f:a": {}}})
    );
}

#[test]
fn reapply_updates_time_and_keeps_single_entry() {
    let live = apply_ok(None, &configmap(json!({"a": "1"})), "alice", false);
    let out = apply(
        Some(&live),
        &configmap(json!({"a": "2"})),
        "alice",
        "v1",
        false,
        LATER,
    )
    .unwrap();
    assert_eq!(out["data"]["a"], "2");
    let list = entries(&out);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["time"], LATER);
}

#[test]
fn kubectl_server_side_apply_refreshes_last_applied_annotation() {
    let mut live = configmap(json!({"a": "1"}));
    live["metadata"]["annotations"] = json!({LAST_APPLIED: "{\"old\":true}\n", "other": "x"});
    let mut applied = configmap(json!({"b": "2", "a": "1"}));
    applied["metadata"]["annotations"] = json!({"other": "x"});
    let out = apply_ok(Some(&live), &applied, "kubectl", false);
    assert_eq!(
        out["metadata"]["annotations"][LAST_APPLIED],
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{\"other\":\"x\"},\"name\":\"demo\",\"namespace\":\"default\"}}\n"
    );

    // Other managers, and objects without the annotation, are left alone.
    let out = apply_ok(Some(&live), &applied, "helm", false);
    assert_eq!(
        out["metadata"]["annotations"][LAST_APPLIED],
        "{\"old\":true}\n"
    );
    let out = apply_ok(None, &applied, "kubectl", false);
    assert!(out["metadata"]["annotations"].get(LAST_APPLIED).is_none());
}

#[test]
fn subresource_entries_are_separate_managers() {
    let mut live = configmap(json!({"a": "1"}));
    live["status"] = json!({"phase": "x"});
    live["metadata"]["managedFields"] = json!([{
        "manager": "alice", "operation": "Apply", "apiVersion": "v1", "time": NOW,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}}}, "subresource": "status"
    }]);
    let out = apply_ok(Some(&live), &configmap(json!({"a": "1"})), "alice", false);
    // alice's main-resource apply does not inherit (and so does not prune) the status entry.
    assert_eq!(out["status"]["phase"], "x");
    assert_eq!(entries(&out).len(), 2);
}

#[test]
fn several_conflicts_are_all_reported() {
    let live = apply_ok(
        None,
        &configmap(json!({"a": "1", "b": "1"})),
        "alice",
        false,
    );
    let live = apply_ok(
        Some(&live),
        &json!({"metadata": {"name": "demo", "labels": {"x": "1"}}}),
        "carol",
        false,
    );
    let mut applied = configmap(json!({"a": "2", "b": "2"}));
    applied["metadata"]["labels"] = json!({"x": "2"});
    let err = apply(Some(&live), &applied, "bob", "v1", false, NOW).unwrap_err();
    let ApplyError::Conflicts(conflicts) = &err else {
        panic!("expected conflicts, got {err}");
    };
    let mut found: Vec<(String, String)> = conflicts
        .iter()
        .map(|c| (c.manager.clone(), c.field.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("alice".to_string(), ".data.a".to_string()),
            ("alice".to_string(), ".data.b".to_string()),
            ("carol".to_string(), ".metadata.labels.x".to_string()),
        ]
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"alice\":\n- .data.a\n- .data.b\nconflicts with \"carol\":\n- .metadata.labels.x"
    );
}
