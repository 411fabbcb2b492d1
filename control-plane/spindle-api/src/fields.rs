//! Schema-driven field checks behind `fieldValidation=Strict|Warn|Ignore`: unknown fields
//! (found by walking the object against the kind's OpenAPI schema) and duplicate JSON keys
//! (found by scanning the raw body, because serde_json silently keeps the last one).
//!
//! Schemas are compiled once per kind into a small graph and cached process-wide, since
//! these checks run on every write.

use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};

use serde_json::{Map, Value};

use crate::Kind;

/// Paths (Kubernetes dotted form, e.g. `spec.template.spec.containers[0].bogus`) of fields
/// in `obj` that the kind's schema does not declare. Map-typed fields (labels, data,
/// resources.limits, ...) accept any key; int-or-string, quantity and free-form objects
/// accept anything.
pub fn unknown_fields(kind: &Kind, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    with_compiled(kind, |c, root| {
        let mut path = String::new();
        c.find_unknown(root, obj, &mut path, &mut out);
    });
    out
}

/// Removes the fields [`unknown_fields`] reports (`Ignore`/`Warn` behaviour).
pub fn prune_unknown(kind: &Kind, obj: &mut Value) {
    with_compiled(kind, |c, root| c.prune(root, obj));
}

/// Duplicate keys of a JSON document as dotted paths, e.g.
/// `{"metadata":{"name":"a","name":"b"}}` gives `["metadata.name"]`. Stops quietly at
/// malformed input: the real parser reports that.
pub fn duplicate_json_fields(raw: &[u8]) -> Vec<String> {
    let mut scan = Scanner {
        b: raw,
        i: 0,
        path: String::new(),
        out: Vec::new(),
    };
    scan.value(0);
    scan.out
}

// ---------------------------------------------------------------------------------------
// Compiled schemas

#[derive(Debug)]
enum Node {
    /// Anything goes below here (int-or-string, quantity, RawExtension, FieldsV1, ...).
    Any,
    /// A primitive: nothing to descend into (type mismatches are the typed check's job).
    Leaf,
    Object {
        props: HashMap<String, usize>,
        extra: Option<usize>,
    },
    Map(usize),
    Array(usize),
}

#[derive(Default)]
struct Compiled {
    nodes: Vec<Node>,
    /// Definition name -> node, shared between kinds (ObjectMeta is compiled once).
    by_name: HashMap<String, usize>,
}

fn catalog() -> &'static RwLock<Compiled> {
    static CATALOG: OnceLock<RwLock<Compiled>> = OnceLock::new();
    CATALOG.get_or_init(|| RwLock::new(Compiled::default()))
}

/// Runs `f` on the compiled schema of `kind`, compiling it on first use.
fn with_compiled<R>(kind: &Kind, f: impl FnOnce(&Compiled, usize) -> R) -> R {
    let name = (kind.schema_name)();
    {
        let c = catalog().read().unwrap_or_else(|e| e.into_inner());
        if let Some(&root) = c.by_name.get(&name) {
            return f(&c, root);
        }
    }
    let mut c = catalog().write().unwrap_or_else(|e| e.into_inner());
    let root = match c.by_name.get(&name) {
        Some(&root) => root,
        None => {
            let defs = crate::openapi::generate([kind], false);
            c.named(&name, &defs)
        }
    };
    f(&c, root)
}

impl Compiled {
    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn named(&mut self, name: &str, defs: &Map<String, Value>) -> usize {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        // Reserve the slot first so recursive definitions terminate.
        let id = self.push(Node::Any);
        self.by_name.insert(name.to_owned(), id);
        if let Some(schema) = defs.get(name) {
            self.nodes[id] = self.node(schema, defs);
        }
        id
    }

    fn compile(&mut self, s: &Value, defs: &Map<String, Value>) -> usize {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            return self.named(crate::openapi::ref_name(r), defs);
        }
        let n = self.node(s, defs);
        self.push(n)
    }

    fn node(&mut self, s: &Value, defs: &Map<String, Value>) -> Node {
        let Some(obj) = s.as_object() else {
            return Node::Any;
        };
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        if flag("x-kubernetes-int-or-string") || flag("x-kubernetes-preserve-unknown-fields") {
            return Node::Any;
        }
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            let id = self.named(crate::openapi::ref_name(r), defs);
            return self.alias(id);
        }
        if let Some(Value::Array(all)) = obj.get("allOf") {
            // Upstream only uses allOf to wrap a single $ref next to a description.
            return match all.as_slice() {
                [one] => {
                    let id = self.compile(one, defs);
                    self.alias(id)
                }
                _ => Node::Any,
            };
        }
        let extra = match obj.get("additionalProperties") {
            Some(a @ Value::Object(_)) => Some(self.compile(a, defs)),
            Some(Value::Bool(true)) => return Node::Any,
            _ => None,
        };
        if let Some(Value::Object(props)) = obj.get("properties") {
            let props = props
                .iter()
                .map(|(k, p)| (k.clone(), self.compile(p, defs)))
                .collect();
            return Node::Object { props, extra };
        }
        if let Some(e) = extra {
            return Node::Map(e);
        }
        match obj.get("type").and_then(Value::as_str) {
            Some("array") => match obj.get("items") {
                Some(items @ Value::Object(_)) => Node::Array(self.compile(items, defs)),
                _ => Node::Any,
            },
            Some("string" | "integer" | "number" | "boolean") => Node::Leaf,
            _ => Node::Any,
        }
    }

    /// A node that behaves like `id`. Nodes are small, so copying the shape beats an extra
    /// indirection on every lookup; a slot still being compiled (recursion) stays `Any`.
    fn alias(&self, id: usize) -> Node {
        match self.nodes.get(id) {
            Some(Node::Object { props, extra }) => Node::Object {
                props: props.clone(),
                extra: *extra,
            },
            Some(Node::Map(c)) => Node::Map(*c),
            Some(Node::Array(c)) => Node::Array(*c),
            Some(Node::Leaf) => Node::Leaf,
            _ => Node::Any,
        }
    }

    fn find_unknown(&self, id: usize, v: &Value, path: &mut String, out: &mut Vec<String>) {
        let len = path.len();
        match (self.nodes.get(id), v) {
            (Some(Node::Object { props, extra }), Value::Object(m)) => {
                for (k, child) in m {
                    push_field(path, k);
                    match props.get(k).copied().or(*extra) {
                        Some(c) => self.find_unknown(c, child, path, out),
                        None => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            }
            (Some(Node::Map(c)), Value::Object(m)) => {
                for (k, child) in m {
                    push_field(path, k);
                    self.find_unknown(*c, child, path, out);
                    path.truncate(len);
                }
            }
            (Some(Node::Array(c)), Value::Array(items)) => {
                for (i, child) in items.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    self.find_unknown(*c, child, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn prune(&self, id: usize, v: &mut Value) {
        match (self.nodes.get(id), v) {
            (Some(Node::Object { props, extra }), Value::Object(m)) => {
                if extra.is_none() {
                    m.retain(|k, _| props.contains_key(k));
                }
                for (k, child) in m.iter_mut() {
                    if let Some(c) = props.get(k).copied().or(*extra) {
                        self.prune(c, child);
                    }
                }
            }
            (Some(Node::Map(c)), Value::Object(m)) => {
                m.values_mut().for_each(|child| self.prune(*c, child))
            }
            (Some(Node::Array(c)), Value::Array(items)) => {
                items.iter_mut().for_each(|child| self.prune(*c, child))
            }
            _ => {}
        }
    }
}

fn push_field(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

// ---------------------------------------------------------------------------------------
// Duplicate keys

/// Deeper than serde_json's own recursion limit (128), so anything parseable is scanned
/// fully while hostile nesting cannot exhaust the stack.
const MAX_DEPTH: usize = 256;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    path: String,
    out: Vec<String>,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Scans one value; `None` on malformed input.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            _ => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// Scans a string starting at its opening quote and returns its raw contents.
    fn string(&mut self) -> Option<&[u8]> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        let raw = self.b.get(start..self.i)?;
        self.i += 1;
        Some(raw)
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        let mut seen = HashSet::new();
        let len = self.path.len();
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = decode_key(self.string()?)?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            push_field(&mut self.path, &key);
            if !seen.insert(key) {
                self.out.push(self.path.clone());
            }
            let r = self.value(depth + 1);
            self.path.truncate(len);
            r?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        let len = self.path.len();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        let mut index = 0usize;
        loop {
            self.path.push_str(&format!("[{index}]"));
            index += 1;
            let r = self.value(depth + 1);
            self.path.truncate(len);
            r?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Keys are compared decoded, so `"a"` and `"\u0061"` count as the same field.
fn decode_key(raw: &[u8]) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use serde_json::json;

    fn kind(reg: &Registry, api_version: &str, k: &str) -> Kind {
        reg.by_kind(api_version, k)
            .cloned()
            .expect("kind registered")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "any/key": "x"}, "annotations": {"a.b/c": "d"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "nginx", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                        {"name": "b", "image": "nginx", "bogus": 1, "ports": [{"containerPort": 80, "nope": true}]}
                    ]}
                }
            },
            "extra": {"x": 1}
        })
    }

    #[test]
    fn finds_unknown_fields_in_deployment() {
        let reg = Registry::new();
        let k = kind(&reg, "apps/v1", "Deployment");
        let mut found = unknown_fields(&k, &deployment());
        found.sort();
        assert_eq!(
            found,
            [
                "extra",
                "spec.template.spec.containers[1].bogus",
                "spec.template.spec.containers[1].ports[0].nope"
            ]
        );
    }

    #[test]
    fn maps_and_int_or_string_accept_anything() {
        let reg = Registry::new();
        let cm = kind(&reg, "v1", "ConfigMap");
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "y"}},
            "data": {"anything": "goes", "more": "keys"}, "binaryData": {"b": "AA=="}});
        assert!(unknown_fields(&cm, &obj).is_empty());

        let svc = kind(&reg, "v1", "Service");
        for target in [json!(8080), json!("http")] {
            let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": target}]}});
            assert!(unknown_fields(&svc, &obj).is_empty());
        }
        let obj = json!({"metadata": {"name": "s", "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {".": {}}}}]}});
        assert!(unknown_fields(&svc, &obj).is_empty());
    }

    #[test]
    fn prune_removes_only_unknown() {
        let reg = Registry::new();
        let k = kind(&reg, "apps/v1", "Deployment");
        let mut obj = deployment();
        prune_unknown(&k, &mut obj);
        assert!(unknown_fields(&k, &obj).is_empty());
        let mut expected = deployment();
        if let Some(m) = expected.as_object_mut() {
            m.remove("extra");
        }
        let c = &mut expected["spec"]["template"]["spec"]["containers"][1];
        if let Some(m) = c.as_object_mut() {
            m.remove("bogus");
        }
        if let Some(m) = c["ports"][0].as_object_mut() {
            m.remove("nope");
        }
        assert_eq!(obj, expected);
    }

    #[test]
    fn type_mismatches_are_left_to_the_typed_check() {
        let reg = Registry::new();
        let k = kind(&reg, "apps/v1", "Deployment");
        assert!(unknown_fields(&k, &json!({"spec": "oops", "metadata": [1]})).is_empty());
        assert!(unknown_fields(&k, &json!("not an object")).is_empty());
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            duplicate_json_fields(br#"{"metadata":{"name":"a","name":"b"}}"#),
            ["metadata.name"]
        );
        assert_eq!(
            duplicate_json_fields(br#" { "a" : [ {"x":1,"y":{"z":[1,2]},"x":2}, {"x":1} ], "b":"\"}", "\u0062": null } "#),
            ["a[0].x", "b"]
        );
        assert!(duplicate_json_fields(br#"{"a":{"b":1},"c":{"b":1},"s":"a,b\\"}"#).is_empty());
        assert!(duplicate_json_fields(b"").is_empty());
        assert_eq!(duplicate_json_fields(br#"{"a":1,"a":"#), ["a"]);
        let deep = "[".repeat(100_000);
        assert!(duplicate_json_fields(deep.as_bytes()).is_empty());
    }
}
