//! OpenAPI documents generated from the registry: the `/openapi/v3` root, one OpenAPI 3.0
//! document per group-version, and the swagger 2.0 document as gnostic protobuf for
//! `/openapi/v2`.
//!
//! kubectl reads these for three things: `kubectl explain` (real schemas with
//! descriptions, found through `x-kubernetes-group-version-kind`), the decision to leave
//! field validation to the server (a `fieldValidation` query parameter on the kind's PATCH
//! operation), and strategic-merge-patch metadata in client-side apply. Everything is built
//! once at startup; the schemas come from k8s-openapi's schemars impls, so they carry the
//! upstream names and descriptions.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};
use spindle_patch::strategy::{list_strategy, ListStrategy};

use crate::{Kind, Registry};

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";
const GVK_EXT: &str = "x-kubernetes-group-version-kind";
const ACTION_EXT: &str = "x-kubernetes-action";
const PATCH_STRATEGY_EXT: &str = "x-kubernetes-patch-strategy";
const PATCH_MERGE_KEY_EXT: &str = "x-kubernetes-patch-merge-key";
const LIST_TYPE_EXT: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS_EXT: &str = "x-kubernetes-list-map-keys";
/// How many fields deep the list annotation walk goes; recursive schemas (JSONSchemaProps)
/// are also cut off at the first repeated definition.
const MAX_FIELD_DEPTH: usize = 32;
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
/// Advertised in `info.version`; kubectl only displays it.
const API_VERSION: &str = "v1.33.0";

const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const WRITE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const LIST_PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

const GET_Q: &[&str] = &["pretty"];
const LIST_Q: &[&str] = &[
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
const WRITE_Q: &[&str] = &["pretty", "dryRun", "fieldManager", "fieldValidation"];
const PATCH_Q: &[&str] = &[
    "pretty",
    "dryRun",
    "fieldManager",
    "fieldValidation",
    "force",
];
const DELETE_Q: &[&str] = &[
    "pretty",
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION_Q: &[&str] = &[
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

/// The precomputed documents. Built once; handlers only borrow from it.
pub struct OpenApi {
    v3_root: Value,
    v3_docs: HashMap<String, Value>,
    v2: Vec<u8>,
    v2_etag: String,
}

impl OpenApi {
    pub fn new(reg: &Registry) -> OpenApi {
        let kinds = reg.kinds();
        let mut defs = generate(kinds.iter(), true);
        let mut names: HashMap<(&str, &str, &str), (String, String)> = HashMap::new();
        for k in kinds {
            let item = (k.schema_name)();
            if let Some(Value::Object(o)) = defs.get_mut(&item) {
                o.insert(GVK_EXT.into(), json!([gvk(k.group, k.version, k.kind)]));
            }
            let list = list_name(k, &item);
            defs.insert(list.clone(), list_schema(k, &item));
            names.insert((k.group, k.version, k.kind), (item, list));
        }
        // Before anything is hashed or serialized: both documents carry the annotations.
        let roots: Vec<String> = kinds.iter().map(|k| (k.schema_name)()).collect();
        annotate_lists(&mut defs, &roots);

        let mut root_paths = Map::new();
        let mut v3_docs = HashMap::new();
        let mut v2_paths = Map::new();
        for (group, version) in reg.group_versions() {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let mut specs = Vec::new();
            let mut roots: Vec<String> = ["Status", "DeleteOptions", "Patch", "ListMeta"]
                .iter()
                .map(|n| format!("{META}{n}"))
                .collect();
            for k in reg.kinds_in(group, version) {
                let Some((item, list)) = names.get(&(k.group, k.version, k.kind)) else {
                    continue;
                };
                specs.extend(kind_paths(k, item, list));
                roots.push(item.clone());
                roots.push(list.clone());
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": API_VERSION},
                "paths": v3_paths(&specs),
                "components": {"schemas": closure(&defs, roots)},
            });
            // Serializing a Value with string keys cannot fail.
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let hash = hex::encode_upper(Sha512::digest(&bytes));
            root_paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
            v3_docs.insert(key, doc);
            for spec in &specs {
                v2_paths.insert(spec.path.clone(), v2_path_item(spec));
            }
        }

        let v2_defs: Map<String, Value> = defs
            .iter()
            .map(|(name, schema)| {
                let mut s = schema.clone();
                to_v2_schema(&mut s);
                (name.clone(), s)
            })
            .collect();
        let swagger = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": API_VERSION},
            "paths": v2_paths,
            "definitions": v2_defs,
        });
        let v2 = gnostic::document(&swagger).encode_to_vec();
        // kube-apiserver uses the SHA-512 of the body as a strong (quoted) ETag.
        let v2_etag = format!("\"{}\"", hex::encode_upper(Sha512::digest(&v2)));
        OpenApi {
            v3_root: json!({ "paths": root_paths }),
            v3_docs,
            v2,
            v2_etag,
        }
    }

    /// `GET /openapi/v3`: one `serverRelativeURL` per group-version, with the document's
    /// hash as cache key.
    pub fn v3_root(&self) -> &Value {
        &self.v3_root
    }

    /// `GET /openapi/v3/<path>` where `path` is `api/v1` or `apis/<group>/<version>`
    /// (a leading `/` and a `?hash=` query are tolerated).
    pub fn v3_group_version(&self, path: &str) -> Option<&Value> {
        let path = path.split('?').next().unwrap_or(path).trim_matches('/');
        self.v3_docs.get(path)
    }

    /// `GET /openapi/v2`: gnostic `openapi.v2.Document` protobuf; serve with
    /// `Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf`.
    pub fn v2_protobuf(&self) -> &[u8] {
        &self.v2
    }

    /// Quoted strong ETag of [`Self::v2_protobuf`].
    pub fn v2_etag(&self) -> &str {
        &self.v2_etag
    }
}

// ---------------------------------------------------------------------------------------
// Schemas

/// Schemas of `kinds` and everything they reference, keyed by Kubernetes name, with
/// OpenAPI 3 `$ref`s and `$ref` siblings moved next to an `allOf` (kubectl explain follows
/// `allOf`, and a `$ref` with siblings is not valid OpenAPI 3.0). `with_meta` adds the
/// meta.k8s.io types the REST operations use.
pub(crate) fn generate<'a>(
    kinds: impl IntoIterator<Item = &'a Kind>,
    with_meta: bool,
) -> Map<String, Value> {
    let mut g = SchemaSettings::openapi3().into_generator();
    for k in kinds {
        (k.schema)(&mut g);
    }
    if with_meta {
        g.subschema_for::<meta::Status>();
        g.subschema_for::<meta::DeleteOptions>();
        g.subschema_for::<meta::Patch>();
        g.subschema_for::<meta::ListMeta>();
    }
    let mut defs = g.take_definitions(true);
    for s in defs.values_mut() {
        normalize_v3(s);
    }
    defs
}

/// The definition name a `$ref` points to, whatever definitions path produced it.
pub(crate) fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// Calls `f` on every direct subschema of a schema object (not on property *names*, so a
/// property literally called `$ref` is never mistaken for a reference).
pub(crate) fn for_each_subschema(obj: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(&mut *f);
    }
    for key in ["additionalProperties", "items", "not"] {
        match obj.get_mut(key) {
            Some(v @ Value::Object(_)) => f(v),
            Some(Value::Array(a)) if key == "items" => a.iter_mut().for_each(&mut *f),
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = obj.get_mut(key) {
            a.iter_mut().for_each(&mut *f);
        }
    }
}

fn normalize_v3(s: &mut Value) {
    let Some(obj) = s.as_object_mut() else { return };
    if let Some(Value::String(r)) = obj.get("$ref") {
        let r = json!(format!("{V3_REF}{}", ref_name(r)));
        if obj.len() > 1 {
            obj.remove("$ref");
            match obj.get_mut("allOf") {
                Some(Value::Array(all)) => all.push(json!({ "$ref": r })),
                _ => {
                    obj.insert("allOf".into(), json!([{ "$ref": r }]));
                }
            }
        } else {
            obj.insert("$ref".into(), r);
        }
    }
    for_each_subschema(obj, &mut normalize_v3);
}

/// Swagger 2.0 form: `#/definitions/` refs, and the single-`$ref` `allOf` wrapper undone
/// (kube-openapi's v2 parser does not follow `allOf`; upstream swagger.json puts the
/// description next to `$ref`).
fn to_v2_schema(s: &mut Value) {
    let Some(obj) = s.as_object_mut() else { return };
    let single_ref = match obj.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 => all[0]
            .get("$ref")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    if let Some(r) = single_ref {
        obj.remove("allOf");
        obj.insert("$ref".into(), json!(r));
    }
    if let Some(Value::String(r)) = obj.get_mut("$ref") {
        *r = format!("{V2_REF}{}", ref_name(r));
    }
    for_each_subschema(obj, &mut to_v2_schema);
}

// ---------------------------------------------------------------------------------------
// List patch metadata

/// Puts the Kubernetes list extensions (`x-kubernetes-patch-strategy`,
/// `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`)
/// on every array-typed property reachable from the kinds' root schemas, as upstream
/// swagger.json has them. kubectl's client-side apply reads them to compute a strategic
/// merge patch; without them every list is atomic and re-applying an unchanged manifest
/// replaces lists the server has defaulted into.
///
/// Strategies come from [`list_strategy`], keyed by field path from the object root, while
/// schemas are per type and shared, so the walk starts at each kind and follows references
/// while tracking the path. A property reached under several paths keeps a merge strategy
/// over `Replace`, otherwise the first one found.
fn annotate_lists(defs: &mut Map<String, Value>, roots: &[String]) {
    let mut found: Vec<((String, String), ListStrategy)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for root in roots {
        let mut walk = ListWalk {
            defs,
            path: Vec::new(),
            stack: Vec::new(),
            found: Vec::new(),
        };
        walk.def(root);
        for (at, strategy) in walk.found {
            match index.get(&at) {
                Some(&i) => {
                    if found[i].1 == ListStrategy::Replace && strategy != ListStrategy::Replace {
                        found[i].1 = strategy;
                    }
                }
                None => {
                    index.insert(at.clone(), found.len());
                    found.push((at, strategy));
                }
            }
        }
    }
    for ((def, pointer), strategy) in found {
        let Some(Value::Object(prop)) = defs.get_mut(&def).and_then(|d| d.pointer_mut(&pointer))
        else {
            continue;
        };
        for (k, v) in list_extensions(&def, &pointer, strategy) {
            prop.insert(k.into(), v);
        }
    }
}

/// The extensions for one list property, upstream's spelling.
fn list_extensions(def: &str, pointer: &str, strategy: ListStrategy) -> Vec<(&'static str, Value)> {
    match strategy {
        ListStrategy::Replace => vec![(LIST_TYPE_EXT, json!("atomic"))],
        ListStrategy::MergePrimitives => vec![
            (PATCH_STRATEGY_EXT, json!("merge")),
            (LIST_TYPE_EXT, json!("set")),
        ],
        ListStrategy::MergeByKey(key) => {
            // Upstream identifies ports by number and protocol for server-side apply while
            // strategic merge patch keeps the single number key.
            let second = match (def.rsplit('.').next(), pointer, key) {
                (
                    Some("Container" | "EphemeralContainer"),
                    "/properties/ports",
                    "containerPort",
                )
                | (Some("ServiceSpec"), "/properties/ports", "port") => Some("protocol"),
                (Some("PodSpec"), "/properties/topologySpreadConstraints", "topologyKey") => {
                    Some("whenUnsatisfiable")
                }
                _ => None,
            };
            let keys: Vec<&str> = std::iter::once(key).chain(second).collect();
            vec![
                (PATCH_STRATEGY_EXT, json!("merge")),
                (PATCH_MERGE_KEY_EXT, json!(key)),
                (LIST_TYPE_EXT, json!("map")),
                (LIST_MAP_KEYS_EXT, json!(keys)),
            ]
        }
    }
}

fn is_array(s: &Map<String, Value>) -> bool {
    match s.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "array"),
        _ => s.contains_key("items"),
    }
}

fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

struct ListWalk<'a> {
    defs: &'a Map<String, Value>,
    /// Field names from the object root, list indices left out.
    path: Vec<&'a str>,
    /// Definitions being walked, to stop at recursion.
    stack: Vec<&'a str>,
    /// (definition, JSON pointer of the property inside it) and its strategy.
    found: Vec<((String, String), ListStrategy)>,
}

impl<'a> ListWalk<'a> {
    fn def(&mut self, name: &str) {
        let Some((name, schema)) = self.defs.get_key_value(name) else {
            return;
        };
        if self.stack.contains(&name.as_str()) || self.path.len() > MAX_FIELD_DEPTH {
            return;
        }
        self.stack.push(name);
        self.schema(schema, name, String::new());
        self.stack.pop();
    }

    /// Walks `s`, which sits at `pointer` inside definition `def`.
    fn schema(&mut self, s: &'a Value, def: &'a str, pointer: String) {
        let Some(obj) = s.as_object() else { return };
        if let Some(Value::String(r)) = obj.get("$ref") {
            self.def(ref_name(r));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(a)) = obj.get(key) {
                for (i, sub) in a.iter().enumerate() {
                    self.schema(sub, def, format!("{pointer}/{key}/{i}"));
                }
            }
        }
        match obj.get("items") {
            Some(sub @ Value::Object(_)) => self.schema(sub, def, format!("{pointer}/items")),
            Some(Value::Array(a)) => {
                for (i, sub) in a.iter().enumerate() {
                    self.schema(sub, def, format!("{pointer}/items/{i}"));
                }
            }
            _ => {}
        }
        // Map values sit under arbitrary keys, which the strategy table cannot name.
        let Some(Value::Object(props)) = obj.get("properties") else {
            return;
        };
        if self.path.len() >= MAX_FIELD_DEPTH {
            return;
        }
        for (name, sub) in props {
            let at = format!("{pointer}/properties/{}", pointer_token(name));
            self.path.push(name);
            if sub.as_object().is_some_and(is_array) {
                let strategy = list_strategy(&self.path);
                self.found.push(((def.to_owned(), at.clone()), strategy));
            }
            self.schema(sub, def, at);
            self.path.pop();
        }
    }
}

fn collect_refs(s: &Value, out: &mut Vec<String>) {
    let Some(obj) = s.as_object() else { return };
    if let Some(Value::String(r)) = obj.get("$ref") {
        out.push(ref_name(r).to_owned());
    }
    // Read-only twin of `for_each_subschema`.
    if let Some(Value::Object(props)) = obj.get("properties") {
        props.values().for_each(|v| collect_refs(v, out));
    }
    for key in ["additionalProperties", "items", "not"] {
        match obj.get(key) {
            Some(v @ Value::Object(_)) => collect_refs(v, out),
            Some(Value::Array(a)) if key == "items" => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = obj.get(key) {
            a.iter().for_each(|v| collect_refs(v, out));
        }
    }
}

/// `roots` and every definition reachable from them, in name order.
fn closure(defs: &Map<String, Value>, roots: Vec<String>) -> Map<String, Value> {
    let mut seen = HashSet::new();
    let mut todo = roots;
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = defs.get(&name) {
            collect_refs(s, &mut todo);
        }
    }
    let mut names: Vec<String> = seen.into_iter().filter(|n| defs.contains_key(n)).collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| defs.get(&n).cloned().map(|s| (n, s)))
        .collect()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn list_name(k: &Kind, item: &str) -> String {
    match item.strip_suffix(k.kind) {
        Some(prefix) => format!("{prefix}{}", k.list_kind),
        None => format!("{item}List"),
    }
}

/// k8s-openapi's `List<T>` is generic and has no per-kind schema, so the `<Kind>List`
/// definition is written here in upstream's shape.
fn list_schema(k: &Kind, item: &str) -> Value {
    json!({
        "description": format!("{} is a list of {} objects.", k.list_kind, k.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", k.plural),
                "type": "array",
                "items": {"$ref": format!("{V3_REF}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{V3_REF}{META}ListMeta")}],
            },
        },
        "required": ["items"],
        GVK_EXT: [gvk(k.group, k.version, k.list_kind)],
    })
}

// ---------------------------------------------------------------------------------------
// Paths, described once and rendered in both OpenAPI 3 and swagger 2 form.

struct Op {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    query: &'static [&'static str],
    body: Option<(String, &'static [&'static str])>,
    produces: &'static [&'static str],
    responses: Vec<(&'static str, String)>,
    gvk: Value,
}

struct PathSpec {
    path: String,
    params: Vec<&'static str>,
    ops: Vec<Op>,
}

fn op_id_infix(k: &Kind) -> String {
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

fn kind_paths(k: &Kind, item: &str, list: &str) -> Vec<PathSpec> {
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
fn param_info(name: &str) -> (&'static str, &'static str) {
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

fn response_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        _ => "",
    }
}

fn v3_paths(specs: &[PathSpec]) -> Value {
    let mut paths = Map::new();
    for spec in specs {
        let mut item = Map::new();
        let params: Vec<Value> = spec
            .params
            .iter()
            .map(|p| {
                let (ty, desc) = param_info(p);
                json!({"name": p, "in": "path", "description": desc, "required": true, "schema": {"type": ty, "uniqueItems": true}})
            })
            .collect();
        if !params.is_empty() {
            item.insert("parameters".into(), Value::Array(params));
        }
        for op in &spec.ops {
            let parameters: Vec<Value> = op
                .query
                .iter()
                .map(|q| {
                    let (ty, desc) = param_info(q);
                    json!({"name": q, "in": "query", "description": desc, "schema": {"type": ty, "uniqueItems": true}})
                })
                .collect();
            let mut o = json!({
                "description": op.description,
                "operationId": op.id,
                "parameters": parameters,
            });
            if let Some((schema, types)) = &op.body {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"schema": {"$ref": format!("{V3_REF}{schema}")}}),
                        )
                    })
                    .collect();
                o["requestBody"] = json!({"content": content, "required": true});
            }
            let mut responses = Map::new();
            for (code, schema) in &op.responses {
                let content: Map<String, Value> = op
                    .produces
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"schema": {"$ref": format!("{V3_REF}{schema}")}}),
                        )
                    })
                    .collect();
                responses.insert(
                    code.to_string(),
                    json!({"description": response_description(code), "content": content}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o["responses"] = Value::Object(responses);
            o[ACTION_EXT] = json!(op.action);
            o[GVK_EXT] = op.gvk.clone();
            item.insert(op.method.into(), o);
        }
        paths.insert(spec.path.clone(), Value::Object(item));
    }
    Value::Object(paths)
}

fn v2_path_item(spec: &PathSpec) -> Value {
    let mut item = Map::new();
    for op in &spec.ops {
        let mut parameters: Vec<Value> = Vec::new();
        if let Some((schema, _)) = &op.body {
            parameters.push(json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("{V2_REF}{schema}")}}));
        }
        for q in op.query {
            let (ty, desc) = param_info(q);
            parameters.push(json!({"uniqueItems": true, "type": ty, "description": desc, "name": q, "in": "query"}));
        }
        let mut responses = Map::new();
        for (code, schema) in &op.responses {
            responses.insert(
                code.to_string(),
                json!({"description": response_description(code), "schema": {"$ref": format!("{V2_REF}{schema}")}}),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let mut o = json!({
            "description": op.description,
            "produces": op.produces,
            "schemes": ["https"],
            "operationId": op.id,
            "parameters": parameters,
            "responses": responses,
            ACTION_EXT: op.action,
            GVK_EXT: op.gvk,
        });
        if let Some((_, types)) = &op.body {
            o["consumes"] = json!(types);
        }
        item.insert(op.method.into(), o);
    }
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|p| {
            let (ty, desc) = param_info(p);
            json!({"uniqueItems": true, "type": ty, "description": desc, "name": p, "in": "path", "required": true})
        })
        .collect();
    if !params.is_empty() {
        item.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(item)
}

// ---------------------------------------------------------------------------------------
// YAML for gnostic `Any` values

/// Block-style YAML for a JSON value (gnostic carries vendor extensions and defaults as
/// YAML text, which kube-openapi unmarshals with go-yaml).
pub(crate) fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(o) if !o.is_empty() => yaml_block(v, 0, &mut out),
        Value::Array(a) if !a.is_empty() => yaml_block(v, 0, &mut out),
        _ => {
            out.push_str(&yaml_scalar(v));
            out.push('\n');
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(o) if !o.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn yaml_block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) => {
            for (k, val) in o {
                out.push_str(&pad);
                out.push_str(&yaml_str(k));
                if is_block(val) {
                    out.push_str(":\n");
                    let child = if val.is_array() { indent } else { indent + 2 };
                    yaml_block(val, child, out);
                } else {
                    out.push_str(": ");
                    out.push_str(&yaml_scalar(val));
                    out.push('\n');
                }
            }
        }
        Value::Array(a) => {
            for val in a {
                if is_block(val) {
                    // Render the element two columns in, then turn its first indent into "- ".
                    let mut inner = String::new();
                    yaml_block(val, indent + 2, &mut inner);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&yaml_scalar(val));
                    out.push('\n');
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(v));
            out.push('\n');
        }
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Plain when unambiguous, otherwise JSON-quoted (a JSON string is a valid YAML
/// double-quoted scalar).
fn yaml_str(s: &str) -> String {
    const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

// ---------------------------------------------------------------------------------------
// gnostic protobuf

/// The subset of gnostic's `openapiv2/OpenAPIv2.proto` (package `openapi.v2`) that the
/// swagger document uses. Tags match the upstream proto; messages and oneof variants that
/// are never produced are left out (decoders skip what they do not know, and we never
/// decode foreign documents).
pub mod gnostic {
    use serde_json::{Map, Value};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(string, tag = "3")]
        pub host: String,
        #[prost(string, tag = "4")]
        pub base_path: String,
        #[prost(string, repeated, tag = "5")]
        pub schemes: Vec<String>,
        #[prost(string, repeated, tag = "6")]
        pub consumes: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub produces: Vec<String>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
        #[prost(message, repeated, tag = "16")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(message, repeated, tag = "7")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// gnostic's `Any`: field 1 is a `google.protobuf.Any`, unused here.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VendorExtension {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "1")]
        pub vendor_extension: Vec<NamedAny>,
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(message, optional, tag = "2")]
        pub get: Option<Operation>,
        #[prost(message, optional, tag = "3")]
        pub put: Option<Operation>,
        #[prost(message, optional, tag = "4")]
        pub post: Option<Operation>,
        #[prost(message, optional, tag = "5")]
        pub delete: Option<Operation>,
        #[prost(message, optional, tag = "6")]
        pub options: Option<Operation>,
        #[prost(message, optional, tag = "7")]
        pub head: Option<Operation>,
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
        #[prost(message, repeated, tag = "9")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, repeated, tag = "10")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, repeated, tag = "1")]
        pub tags: Vec<String>,
        #[prost(string, tag = "2")]
        pub summary: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(string, repeated, tag = "6")]
        pub produces: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub consumes: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(string, repeated, tag = "10")]
        pub schemes: Vec<String>,
        #[prost(bool, tag = "11")]
        pub deprecated: bool,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
        pub oneof: Option<parameters_item::Oneof>,
    }

    pub mod parameters_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Parameter(Box<super::Parameter>),
            #[prost(message, tag = "2")]
            JsonReference(super::JsonReference),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JsonReference {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub description: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
        pub oneof: Option<parameter::Oneof>,
    }

    pub mod parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            BodyParameter(Box<super::BodyParameter>),
            #[prost(message, tag = "2")]
            NonBodyParameter(super::NonBodyParameter),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BodyParameter {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub r#in: String,
        #[prost(bool, tag = "4")]
        pub required: bool,
        #[prost(message, optional, tag = "5")]
        pub schema: Option<Schema>,
        #[prost(message, repeated, tag = "6")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
        pub oneof: Option<non_body_parameter::Oneof>,
    }

    pub mod non_body_parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "3")]
            QueryParameterSubSchema(super::QueryParameterSubSchema),
            #[prost(message, tag = "4")]
            PathParameterSubSchema(super::PathParameterSubSchema),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(bool, tag = "5")]
        pub allow_empty_value: bool,
        #[prost(string, tag = "6")]
        pub r#type: String,
        #[prost(string, tag = "7")]
        pub format: String,
        #[prost(bool, tag = "20")]
        pub unique_items: bool,
        #[prost(message, repeated, tag = "23")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub r#type: String,
        #[prost(string, tag = "6")]
        pub format: String,
        #[prost(bool, tag = "19")]
        pub unique_items: bool,
        #[prost(message, repeated, tag = "22")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
        #[prost(message, repeated, tag = "2")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(oneof = "response_value::Oneof", tags = "1, 2")]
        pub oneof: Option<response_value::Oneof>,
    }

    pub mod response_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Response(Box<super::Response>),
            #[prost(message, tag = "2")]
            JsonReference(super::JsonReference),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(message, optional, tag = "2")]
        pub schema: Option<SchemaItem>,
        #[prost(message, repeated, tag = "5")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// Only the `schema` arm; `file_schema = 2` is never produced.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchemaItem {
        #[prost(oneof = "schema_item::Oneof", tags = "1")]
        pub oneof: Option<schema_item::Oneof>,
    }

    pub mod schema_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Schema(Box<super::Schema>),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, tag = "5")]
        pub default: Option<Any>,
        #[prost(double, tag = "6")]
        pub multiple_of: f64,
        #[prost(double, tag = "7")]
        pub maximum: f64,
        #[prost(bool, tag = "8")]
        pub exclusive_maximum: bool,
        #[prost(double, tag = "9")]
        pub minimum: f64,
        #[prost(bool, tag = "10")]
        pub exclusive_minimum: bool,
        #[prost(int64, tag = "11")]
        pub max_length: i64,
        #[prost(int64, tag = "12")]
        pub min_length: i64,
        #[prost(string, tag = "13")]
        pub pattern: String,
        #[prost(int64, tag = "14")]
        pub max_items: i64,
        #[prost(int64, tag = "15")]
        pub min_items: i64,
        #[prost(bool, tag = "16")]
        pub unique_items: bool,
        #[prost(int64, tag = "17")]
        pub max_properties: i64,
        #[prost(int64, tag = "18")]
        pub min_properties: i64,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, repeated, tag = "20")]
        pub r#enum: Vec<Any>,
        #[prost(message, optional, boxed, tag = "21")]
        pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(string, tag = "26")]
        pub discriminator: String,
        #[prost(bool, tag = "27")]
        pub read_only: bool,
        #[prost(message, optional, tag = "30")]
        pub example: Option<Any>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
        pub oneof: Option<additional_properties_item::Oneof>,
    }

    pub mod additional_properties_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Schema(Box<super::Schema>),
            #[prost(bool, tag = "2")]
            Boolean(bool),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    // ---- JSON swagger -> messages -------------------------------------------------

    fn text(v: &Value, key: &str) -> String {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn texts(v: &Value, key: &str) -> Vec<String> {
        match v.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    fn flag(v: &Value, key: &str) -> bool {
        v.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn float(v: &Value, key: &str) -> f64 {
        v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    fn int(v: &Value, key: &str) -> i64 {
        v.get(key).and_then(Value::as_i64).unwrap_or(0)
    }

    fn any(v: &Value) -> Any {
        Any {
            yaml: super::to_yaml(v),
        }
    }

    fn extensions(v: &Value) -> Vec<NamedAny> {
        let Some(obj) = v.as_object() else {
            return Vec::new();
        };
        obj.iter()
            .filter(|(k, _)| k.starts_with("x-"))
            .map(|(k, v)| NamedAny {
                name: k.clone(),
                value: Some(any(v)),
            })
            .collect()
    }

    fn named_schemas(v: Option<&Value>) -> Vec<NamedSchema> {
        let Some(Value::Object(m)) = v else {
            return Vec::new();
        };
        m.iter()
            .map(|(k, s)| NamedSchema {
                name: k.clone(),
                value: Some(schema(s)),
            })
            .collect()
    }

    pub fn schema(v: &Value) -> Schema {
        let ty = texts(v, "type");
        Schema {
            r#ref: text(v, "$ref"),
            format: text(v, "format"),
            title: text(v, "title"),
            description: text(v, "description"),
            default: v.get("default").map(any),
            multiple_of: float(v, "multipleOf"),
            maximum: float(v, "maximum"),
            exclusive_maximum: flag(v, "exclusiveMaximum"),
            minimum: float(v, "minimum"),
            exclusive_minimum: flag(v, "exclusiveMinimum"),
            max_length: int(v, "maxLength"),
            min_length: int(v, "minLength"),
            pattern: text(v, "pattern"),
            max_items: int(v, "maxItems"),
            min_items: int(v, "minItems"),
            unique_items: flag(v, "uniqueItems"),
            max_properties: int(v, "maxProperties"),
            min_properties: int(v, "minProperties"),
            required: texts(v, "required"),
            r#enum: match v.get("enum") {
                Some(Value::Array(a)) => a.iter().map(any).collect(),
                _ => Vec::new(),
            },
            additional_properties: match v.get("additionalProperties") {
                Some(Value::Bool(b)) => Some(Box::new(AdditionalPropertiesItem {
                    oneof: Some(additional_properties_item::Oneof::Boolean(*b)),
                })),
                Some(s @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
                    oneof: Some(additional_properties_item::Oneof::Schema(Box::new(schema(
                        s,
                    )))),
                })),
                _ => None,
            },
            r#type: (!ty.is_empty()).then_some(TypeItem { value: ty }),
            items: match v.get("items") {
                Some(s @ Value::Object(_)) => Some(ItemsItem {
                    schema: vec![schema(s)],
                }),
                Some(Value::Array(a)) => Some(ItemsItem {
                    schema: a.iter().map(schema).collect(),
                }),
                _ => None,
            },
            all_of: match v.get("allOf") {
                Some(Value::Array(a)) => a.iter().map(schema).collect(),
                _ => Vec::new(),
            },
            properties: v.get("properties").map(|p| Properties {
                additional_properties: named_schemas(Some(p)),
            }),
            discriminator: text(v, "discriminator"),
            read_only: flag(v, "readOnly"),
            example: v.get("example").map(any),
            vendor_extension: extensions(v),
        }
    }

    fn parameter(v: &Value) -> ParametersItem {
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            let reference = JsonReference {
                r#ref: r.to_owned(),
                description: text(v, "description"),
            };
            return ParametersItem {
                oneof: Some(parameters_item::Oneof::JsonReference(reference)),
            };
        }
        let inner = match v.get("in").and_then(Value::as_str) {
            Some("body") => parameter::Oneof::BodyParameter(Box::new(BodyParameter {
                description: text(v, "description"),
                name: text(v, "name"),
                r#in: "body".into(),
                required: flag(v, "required"),
                schema: v.get("schema").map(schema),
                vendor_extension: extensions(v),
            })),
            Some("path") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
                oneof: Some(non_body_parameter::Oneof::PathParameterSubSchema(
                    PathParameterSubSchema {
                        required: flag(v, "required"),
                        r#in: "path".into(),
                        description: text(v, "description"),
                        name: text(v, "name"),
                        r#type: text(v, "type"),
                        format: text(v, "format"),
                        unique_items: flag(v, "uniqueItems"),
                        vendor_extension: extensions(v),
                    },
                )),
            }),
            _ => parameter::Oneof::NonBodyParameter(NonBodyParameter {
                oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(
                    QueryParameterSubSchema {
                        required: flag(v, "required"),
                        r#in: "query".into(),
                        description: text(v, "description"),
                        name: text(v, "name"),
                        allow_empty_value: flag(v, "allowEmptyValue"),
                        r#type: text(v, "type"),
                        format: text(v, "format"),
                        unique_items: flag(v, "uniqueItems"),
                        vendor_extension: extensions(v),
                    },
                )),
            }),
        };
        ParametersItem {
            oneof: Some(parameters_item::Oneof::Parameter(Box::new(Parameter {
                oneof: Some(inner),
            }))),
        }
    }

    fn parameters(v: &Value) -> Vec<ParametersItem> {
        match v.get("parameters") {
            Some(Value::Array(a)) => a.iter().map(parameter).collect(),
            _ => Vec::new(),
        }
    }

    fn responses(v: Option<&Value>) -> Option<Responses> {
        let Some(Value::Object(m)) = v else {
            return None;
        };
        let response_code = m
            .iter()
            .filter(|(k, _)| !k.starts_with("x-"))
            .map(|(code, r)| NamedResponseValue {
                name: code.clone(),
                value: Some(ResponseValue {
                    oneof: Some(response_value::Oneof::Response(Box::new(Response {
                        description: text(r, "description"),
                        schema: r.get("schema").map(|s| SchemaItem {
                            oneof: Some(schema_item::Oneof::Schema(Box::new(schema(s)))),
                        }),
                        vendor_extension: extensions(r),
                    }))),
                }),
            })
            .collect();
        Some(Responses {
            response_code,
            vendor_extension: Vec::new(),
        })
    }

    fn operation(v: Option<&Value>) -> Option<Operation> {
        let v = v?;
        Some(Operation {
            tags: texts(v, "tags"),
            summary: text(v, "summary"),
            description: text(v, "description"),
            operation_id: text(v, "operationId"),
            produces: texts(v, "produces"),
            consumes: texts(v, "consumes"),
            parameters: parameters(v),
            responses: responses(v.get("responses")),
            schemes: texts(v, "schemes"),
            deprecated: flag(v, "deprecated"),
            vendor_extension: extensions(v),
        })
    }

    fn path_item(v: &Value) -> PathItem {
        PathItem {
            r#ref: text(v, "$ref"),
            get: operation(v.get("get")),
            put: operation(v.get("put")),
            post: operation(v.get("post")),
            delete: operation(v.get("delete")),
            options: operation(v.get("options")),
            head: operation(v.get("head")),
            patch: operation(v.get("patch")),
            parameters: parameters(v),
            vendor_extension: extensions(v),
        }
    }

    /// Converts a swagger 2.0 JSON document (the subset this module writes) to gnostic.
    pub fn document(v: &Value) -> Document {
        let empty = Map::new();
        let paths = v.get("paths").and_then(Value::as_object).unwrap_or(&empty);
        Document {
            swagger: text(v, "swagger"),
            info: v.get("info").map(|i| Info {
                title: text(i, "title"),
                version: text(i, "version"),
                description: text(i, "description"),
                vendor_extension: extensions(i),
            }),
            host: text(v, "host"),
            base_path: text(v, "basePath"),
            schemes: texts(v, "schemes"),
            consumes: texts(v, "consumes"),
            produces: texts(v, "produces"),
            paths: Some(Paths {
                vendor_extension: Vec::new(),
                path: paths
                    .iter()
                    .filter(|(k, _)| !k.starts_with("x-"))
                    .map(|(k, p)| NamedPathItem {
                        name: k.clone(),
                        value: Some(path_item(p)),
                    })
                    .collect(),
            }),
            definitions: Some(Definitions {
                additional_properties: named_schemas(v.get("definitions")),
            }),
            vendor_extension: extensions(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gnostic::*;
    use super::*;

    fn api() -> OpenApi {
        OpenApi::new(&Registry::new())
    }

    fn all_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => all_refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| all_refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn v3_root_lists_group_versions_with_hash() {
        let api = api();
        let paths = &api.v3_root()["paths"];
        for gv in [
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/coordination.k8s.io/v1",
            "apis/discovery.k8s.io/v1",
        ] {
            let url = paths[gv]["serverRelativeURL"].as_str().unwrap_or_default();
            assert!(
                url.starts_with(&format!("/openapi/v3/{gv}?hash=")),
                "{gv}: {url}"
            );
            assert!(api.v3_group_version(gv).is_some());
            assert!(api.v3_group_version(&url["/openapi/v3/".len()..]).is_some());
        }
        assert!(api.v3_group_version("apis/nope/v1").is_none());
    }

    #[test]
    fn v3_apps_doc_supports_explain() {
        let api = api();
        let doc = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy[GVK_EXT],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert!(deploy["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        let spec_ref = deploy["properties"]["spec"]["allOf"][0]["$ref"]
            .as_str()
            .expect("spec allOf ref");
        let spec = &schemas[spec_ref.trim_start_matches(V3_REF)];
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
        assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentList"][GVK_EXT][0]["kind"],
            "DeploymentList"
        );
        // Core types live in the core doc, but apps needs PodSpec to explain templates.
        assert!(schemas["io.k8s.api.core.v1.PodSpec"].is_object());

        let mut refs = Vec::new();
        all_refs(doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix(V3_REF)
                .unwrap_or_else(|| panic!("bad ref {r}"));
            assert!(schemas[name].is_object(), "dangling {r}");
        }
    }

    #[test]
    fn v3_patch_operation_advertises_field_validation() {
        let api = api();
        let doc = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
        for path in [
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
        ] {
            let patch = &doc["paths"][path]["patch"];
            assert_eq!(
                patch[GVK_EXT],
                json!({"group": "apps", "kind": "Deployment", "version": "v1"})
            );
            let params = patch["parameters"].as_array().expect("parameters");
            let fv = params
                .iter()
                .find(|p| p["name"] == "fieldValidation")
                .expect("fieldValidation");
            assert_eq!(fv["in"], "query");
            assert_eq!(fv["schema"], json!({"type": "string", "uniqueItems": true}));
            for p in ["dryRun", "fieldManager", "force"] {
                assert!(params.iter().any(|x| x["name"] == p), "{p}");
            }
            let content = patch["requestBody"]["content"]
                .as_object()
                .expect("content");
            for t in PATCH_TYPES {
                assert!(content.contains_key(*t), "{t}");
            }
            assert_eq!(
                patch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/io.k8s.api.apps.v1.Deployment"
            );
        }
        let core = api.v3_group_version("api/v1").expect("core doc");
        assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"].is_object()
        );
    }

    #[test]
    fn v3_lists_carry_patch_metadata() {
        let api = api();
        let apps = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
        let schemas = &apps["components"]["schemas"];
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers[PATCH_STRATEGY_EXT], "merge");
        assert_eq!(containers[PATCH_MERGE_KEY_EXT], "name");
        assert_eq!(containers[LIST_TYPE_EXT], "map");
        assert_eq!(containers[LIST_MAP_KEYS_EXT], json!(["name"]));
        let container = &schemas["io.k8s.api.core.v1.Container"]["properties"];
        assert_eq!(container["env"][PATCH_MERGE_KEY_EXT], "name");
        assert_eq!(container["volumeMounts"][PATCH_MERGE_KEY_EXT], "mountPath");
        assert_eq!(container["ports"][PATCH_MERGE_KEY_EXT], "containerPort");
        assert_eq!(
            container["ports"][LIST_MAP_KEYS_EXT],
            json!(["containerPort", "protocol"])
        );
        assert_eq!(container["args"][LIST_TYPE_EXT], "atomic");
        assert!(container["args"].get(PATCH_STRATEGY_EXT).is_none());
        let meta = &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
        assert_eq!(meta["finalizers"][PATCH_STRATEGY_EXT], "merge");
        assert_eq!(meta["finalizers"][LIST_TYPE_EXT], "set");
        assert_eq!(meta["ownerReferences"][PATCH_MERGE_KEY_EXT], "uid");

        let core = api.v3_group_version("api/v1").expect("core doc");
        let schemas = &core["components"]["schemas"];
        let ports = &schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(ports[PATCH_STRATEGY_EXT], "merge");
        assert_eq!(ports[PATCH_MERGE_KEY_EXT], "port");
        assert_eq!(ports[LIST_MAP_KEYS_EXT], json!(["port", "protocol"]));
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"][PATCH_MERGE_KEY_EXT],
            "name"
        );
    }

    #[test]
    fn v2_lists_carry_patch_metadata() {
        let doc = v2_doc(&api());
        let defs = doc.definitions.expect("definitions").additional_properties;
        let prop = |def: &str, prop: &str| -> Schema {
            defs.iter()
                .find(|d| d.name == def)
                .and_then(|d| d.value.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.additional_properties.iter().find(|p| p.name == prop))
                .and_then(|p| p.value.clone())
                .unwrap_or_else(|| panic!("{def}.{prop}"))
        };
        let ext = |s: &Schema, name: &str| -> Option<String> {
            s.vendor_extension
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.as_ref())
                .map(|a| a.yaml.clone())
        };
        let containers = prop("io.k8s.api.core.v1.PodSpec", "containers");
        assert_eq!(
            ext(&containers, PATCH_STRATEGY_EXT).as_deref(),
            Some("merge\n")
        );
        assert_eq!(
            ext(&containers, PATCH_MERGE_KEY_EXT).as_deref(),
            Some("name\n")
        );
        assert_eq!(ext(&containers, LIST_TYPE_EXT).as_deref(), Some("map\n"));
        assert_eq!(
            ext(&containers, LIST_MAP_KEYS_EXT).as_deref(),
            Some("- name\n")
        );
        let ports = prop("io.k8s.api.core.v1.Container", "ports");
        assert_eq!(
            ext(&ports, LIST_MAP_KEYS_EXT).as_deref(),
            Some("- containerPort\n- protocol\n")
        );
        let ports = prop("io.k8s.api.core.v1.ServiceSpec", "ports");
        assert_eq!(ext(&ports, PATCH_MERGE_KEY_EXT).as_deref(), Some("port\n"));
        let finalizers = prop(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        );
        assert_eq!(
            ext(&finalizers, PATCH_STRATEGY_EXT).as_deref(),
            Some("merge\n")
        );
        assert_eq!(ext(&finalizers, LIST_TYPE_EXT).as_deref(), Some("set\n"));
    }

    #[test]
    fn gnostic_round_trip() {
        let doc = Document {
            swagger: "2.0".into(),
            info: Some(Info {
                title: "Kubernetes".into(),
                version: "v1".into(),
                ..Default::default()
            }),
            definitions: Some(Definitions {
                additional_properties: vec![NamedSchema {
                    name: "x".into(),
                    value: Some(Schema {
                        r#type: Some(TypeItem {
                            value: vec!["object".into()],
                        }),
                        additional_properties: Some(Box::new(AdditionalPropertiesItem {
                            oneof: Some(additional_properties_item::Oneof::Schema(Box::new(
                                Schema {
                                    r#ref: "#/definitions/y".into(),
                                    ..Default::default()
                                },
                            ))),
                        })),
                        vendor_extension: vec![NamedAny {
                            name: GVK_EXT.into(),
                            value: Some(Any {
                                yaml: "- group: apps\n".into(),
                            }),
                        }],
                        ..Default::default()
                    }),
                }],
            }),
            ..Default::default()
        };
        let bytes = doc.encode_to_vec();
        assert_eq!(Document::decode(bytes.as_slice()).ok(), Some(doc));
        // The known-good minimal answer kubectl accepts.
        let minimal = Document {
            swagger: "2.0".into(),
            ..Default::default()
        };
        assert_eq!(minimal.encode_to_vec(), [0x0a, 0x03, b'2', b'.', b'0']);
    }

    #[test]
    fn yaml_of_gvk() {
        assert_eq!(
            to_yaml(&json!([gvk("apps", "v1", "Deployment")])),
            "- group: apps\n  kind: Deployment\n  version: v1\n"
        );
        assert_eq!(
            to_yaml(&gvk("", "v1", "Pod")),
            "group: \"\"\nkind: Pod\nversion: v1\n"
        );
        assert_eq!(
            to_yaml(&json!({"a": [1, {"b": "yes"}], "c": {}})),
            "a:\n- 1\n- b: \"yes\"\nc: {}\n"
        );
    }

    fn v2_doc(api: &OpenApi) -> Document {
        Document::decode(api.v2_protobuf()).expect("v2 decodes")
    }

    #[test]
    fn v2_document_has_definitions_and_patch_parameters() {
        let api = api();
        let bytes = api.v2_protobuf();
        assert_eq!(&bytes[..5], &[0x0a, 0x03, b'2', b'.', b'0']);
        assert!(api.v2_etag().starts_with('"') && api.v2_etag().len() == 130);
        let doc = v2_doc(&api);
        assert_eq!(doc.swagger, "2.0");

        let defs = doc.definitions.expect("definitions").additional_properties;
        let names: HashSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        let deploy = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
            .and_then(|d| d.value.as_ref());
        let deploy = deploy.expect("Deployment definition");
        let ext = deploy
            .vendor_extension
            .iter()
            .find(|e| e.name == GVK_EXT)
            .expect("gvk");
        assert_eq!(
            ext.value.as_ref().map(|a| a.yaml.as_str()),
            Some("- group: apps\n  kind: Deployment\n  version: v1\n")
        );
        let props = &deploy
            .properties
            .as_ref()
            .expect("properties")
            .additional_properties;
        let spec = props
            .iter()
            .find(|p| p.name == "spec")
            .and_then(|p| p.value.as_ref())
            .expect("spec");
        assert_eq!(
            spec.r#ref,
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(!spec.description.is_empty());

        // Every reference resolves, or kube-openapi's parser rejects the whole document.
        fn refs(s: &Schema, out: &mut Vec<String>) {
            if !s.r#ref.is_empty() {
                out.push(s.r#ref.clone());
            }
            for p in s.properties.iter().flat_map(|p| &p.additional_properties) {
                p.value.iter().for_each(|v| refs(v, out));
            }
            s.items
                .iter()
                .flat_map(|i| &i.schema)
                .for_each(|v| refs(v, out));
            s.all_of.iter().for_each(|v| refs(v, out));
            if let Some(additional_properties_item::Oneof::Schema(a)) = s
                .additional_properties
                .as_ref()
                .and_then(|a| a.oneof.as_ref())
            {
                refs(a, out);
            }
        }
        let mut all = Vec::new();
        defs.iter()
            .filter_map(|d| d.value.as_ref())
            .for_each(|s| refs(s, &mut all));
        for r in all {
            let name = r
                .strip_prefix(V2_REF)
                .unwrap_or_else(|| panic!("bad ref {r}"));
            assert!(names.contains(name), "dangling {r}");
        }

        let paths = doc.paths.expect("paths").path;
        let item = paths
            .iter()
            .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .and_then(|p| p.value.as_ref())
            .expect("deployment item path");
        let patch = item.patch.as_ref().expect("patch");
        let gvk_yaml = patch
            .vendor_extension
            .iter()
            .find(|e| e.name == GVK_EXT)
            .and_then(|e| e.value.as_ref());
        assert_eq!(
            gvk_yaml.map(|a| a.yaml.as_str()),
            Some("group: apps\nkind: Deployment\nversion: v1\n")
        );
        let has_fv = patch.parameters.iter().any(|p| match &p.oneof {
            Some(parameters_item::Oneof::Parameter(p)) => match &p.oneof {
                Some(parameter::Oneof::NonBodyParameter(NonBodyParameter {
                    oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q)),
                })) => q.name == "fieldValidation" && q.r#in == "query",
                _ => false,
            },
            _ => false,
        });
        assert!(has_fv);
        assert!(patch
            .consumes
            .iter()
            .any(|c| c == "application/strategic-merge-patch+json"));
    }
}
