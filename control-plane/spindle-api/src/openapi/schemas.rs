use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use spindle_patch::strategy::{list_strategy, ListStrategy};

use super::*;
use crate::Kind;

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

pub(super) fn normalize_v3(s: &mut Value) {
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
pub(super) fn annotate_lists(defs: &mut Map<String, Value>, roots: &[String]) {
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
pub(super) fn list_extensions(
    def: &str,
    pointer: &str,
    strategy: ListStrategy,
) -> Vec<(&'static str, Value)> {
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

pub(super) fn is_array(s: &Map<String, Value>) -> bool {
    match s.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "array"),
        _ => s.contains_key("items"),
    }
}

pub(super) fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

pub(super) struct ListWalk<'a> {
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

pub(super) fn collect_refs(s: &Value, out: &mut Vec<String>) {
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
pub(super) fn closure(defs: &Map<String, Value>, roots: Vec<String>) -> Map<String, Value> {
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

pub(super) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

pub(super) fn list_name(k: &Kind, item: &str) -> String {
    match item.strip_suffix(k.kind) {
        Some(prefix) => format!("{prefix}{}", k.list_kind),
        None => format!("{item}List"),
    }
}

/// k8s-openapi's `List<T>` is generic and has no per-kind schema, so the `<Kind>List`
/// definition is written here in upstream's shape.
pub(super) fn list_schema(k: &Kind, item: &str) -> Value {
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
