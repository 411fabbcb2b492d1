use serde_json::Value;

use super::*;
use crate::Kind;

pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
pub(super) const WRITE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
pub(super) const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
pub(super) const LIST_PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

pub(super) const GET_Q: &[&str] = &["pretty"];
pub(super) const LIST_Q: &[&str] = &[
    "pretty",
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
pub(super) const WRITE_Q: &[&str] = &["pretty", "dryRun", "fieldManager", "fieldValidation"];
pub(super) const PATCH_Q: &[&str] = &[
    "pretty",
    "dryRun",
    "fieldManager",
    "fieldValidation",
    "force",
];
pub(super) const DELETE_Q: &[&str] = &[
    "pretty",
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
pub(super) const DELETE_COLLECTION_Q: &[&str] = &[
    "pretty",
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];

pub(super) struct Op {
    pub(super) method: &'static str,
    pub(super) action: &'static str,
    pub(super) id: String,
    pub(super) description: String,
    pub(super) query: &'static [&'static str],
    pub(super) body: Option<(String, &'static [&'static str])>,
    pub(super) produces: &'static [&'static str],
    pub(super) responses: Vec<(&'static str, String)>,
    pub(super) gvk: Value,
}

pub(super) struct PathSpec {
    pub(super) path: String,
    pub(super) params: Vec<&'static str>,
    pub(super) ops: Vec<Op>,
}

pub(super) fn op_id_infix(k: &Kind) -> String {
    let group = k.group.split('.').next().unwrap_or("");
    let group = if group.is_empty() { "core" } else { group };
    let mut out = String::new();
    for part in [group, k.version] {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

pub(super) fn kind_paths(k: &Kind, item: &str, list: &str) -> Vec<PathSpec> {
    let base = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let (scope_path, scope_params, ns) = if k.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", k.plural),
            vec!["namespace"],
            "Namespaced",
        )
    } else {
        (format!("{base}/{}", k.plural), vec![], "")
    };
    let infix = op_id_infix(k);
    let gvk = gvk(k.group, k.version, k.kind);
    let status = format!("{META}Status");
    let op = |method,
              action,
              verb: &str,
              what: &str,
              desc: String,
              query,
              body: Option<(String, _)>,
              produces| Op {
        method,
        action,
        id: format!("{verb}{infix}{what}"),
        description: desc,
        query,
        body,
        produces,
        responses: Vec::new(),
        gvk: gvk.clone(),
    };
    let with = |mut o: Op, responses: &[(&'static str, &str)]| {
        o.responses = responses.iter().map(|(c, s)| (*c, s.to_string())).collect();
        o
    };
    let kind = k.kind;
    let one = format!("{ns}{kind}");

    let mut collection_ops = vec![
        with(
            op(
                "get",
                "list",
                "list",
                &one,
                format!("list or watch objects of kind {kind}"),
                LIST_Q,
                None,
                LIST_PRODUCES,
            ),
            &[("200", list)],
        ),
        with(
            op(
                "post",
                "post",
                "create",
                &one,
                format!("create a {kind}"),
                WRITE_Q,
                Some((item.to_owned(), WRITE_TYPES)),
                PRODUCES,
            ),
            &[("200", item), ("201", item), ("202", item)],
        ),
    ];
    if k.strategy.deletes_collections() {
        collection_ops.push(with(
            op(
                "delete",
                "deletecollection",
                "deleteCollection",
                &one,
                format!("delete collection of {kind}"),
                DELETE_COLLECTION_Q,
                Some((format!("{META}DeleteOptions"), WRITE_TYPES)),
                PRODUCES,
            ),
            &[("200", &status)],
        ));
    }

    let mut item_params = scope_params.clone();
    item_params.insert(0, "name");
    let mut out = vec![
        PathSpec {
            path: scope_path.clone(),
            params: scope_params.clone(),
            ops: collection_ops,
        },
        PathSpec {
            path: format!("{scope_path}/{{name}}"),
            params: item_params.clone(),
            ops: vec![
                with(
                    op(
                        "get",
                        "get",
                        "read",
                        &one,
                        format!("read the specified {kind}"),
                        GET_Q,
                        None,
                        PRODUCES,
                    ),
                    &[("200", item)],
                ),
                with(
                    op(
                        "put",
                        "put",
                        "replace",
                        &one,
                        format!("replace the specified {kind}"),
                        WRITE_Q,
                        Some((item.to_owned(), WRITE_TYPES)),
                        PRODUCES,
                    ),
                    &[("200", item), ("201", item)],
                ),
                with(
                    op(
                        "delete",
                        "delete",
                        "delete",
                        &one,
                        format!("delete a {kind}"),
                        DELETE_Q,
                        Some((format!("{META}DeleteOptions"), WRITE_TYPES)),
                        PRODUCES,
                    ),
                    &[("200", &status), ("202", &status)],
                ),
                with(
                    op(
                        "patch",
                        "patch",
                        "patch",
                        &one,
                        format!("partially update the specified {kind}"),
                        PATCH_Q,
                        Some((format!("{META}Patch"), PATCH_TYPES)),
                        PRODUCES,
                    ),
                    &[("200", item), ("201", item)],
                ),
            ],
        },
    ];
    if k.status_subresource {
        // The status PATCH carries the kind's GVK too, and kubectl's parameter check stops
        // at the first PATCH it finds for the GVK, so it must list fieldValidation as well.
        out.push(PathSpec {
            path: format!("{scope_path}/{{name}}/status"),
            params: item_params,
            ops: vec![
                with(
                    op(
                        "get",
                        "get",
                        "read",
                        &format!("{one}Status"),
                        format!("read status of the specified {kind}"),
                        GET_Q,
                        None,
                        PRODUCES,
                    ),
                    &[("200", item)],
                ),
                with(
                    op(
                        "put",
                        "put",
                        "replace",
                        &format!("{one}Status"),
                        format!("replace status of the specified {kind}"),
                        WRITE_Q,
                        Some((item.to_owned(), WRITE_TYPES)),
                        PRODUCES,
                    ),
                    &[("200", item), ("201", item)],
                ),
                with(
                    op(
                        "patch",
                        "patch",
                        "patch",
                        &format!("{one}Status"),
                        format!("partially update status of the specified {kind}"),
                        PATCH_Q,
                        Some((format!("{META}Patch"), PATCH_TYPES)),
                        PRODUCES,
                    ),
                    &[("200", item), ("201", item)],
                ),
            ],
        });
    }
    if k.namespaced {
        out.push(PathSpec {
            path: format!("{base}/{}", k.plural),
            params: vec![],
            ops: vec![with(
                op(
                    "get",
                    "list",
                    "list",
                    &format!("{kind}ForAllNamespaces"),
                    format!("list or watch objects of kind {kind}"),
                    LIST_Q,
                    None,
                    LIST_PRODUCES,
                ),
                &[("200", list)],
            )],
        });
    }
    out
}

/// (type, description) of a query or path parameter.
pub(super) fn param_info(name: &str) -> (&'static str, &'static str) {
    match name {
        "name" => ("string", "name of the resource"),
        "namespace" => ("string", "object name and auth scope, such as for teams and projects"),
        "pretty" => ("string", "If 'true', then the output is pretty printed."),
        "dryRun" => ("string", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        "fieldManager" => ("string", "fieldManager is a name associated with the actor or entity that is making these changes."),
        "fieldValidation" => ("string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (default) - Strict"),
        "force" => ("boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."),
        "allowWatchBookmarks" | "watch" | "sendInitialEvents" | "orphanDependents" => ("boolean", ""),
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => ("integer", ""),
        _ => ("string", ""),
    }
}

pub(super) fn response_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        _ => "",
    }
}
