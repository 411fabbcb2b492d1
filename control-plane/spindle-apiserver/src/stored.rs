//! Stored objects as bytes: written without the resourceVersion (the store revision is the
//! truth), read back into responses by splicing, and looked at by selectors through a
//! sparse view. Lists and watch events are most of the API server's output, and parsing and
//! re-encoding whole objects (managedFields included) for them was most of its cost; here
//! only the members that change (metadata's resourceVersion) or that a selector reads are
//! touched, and everything else is copied as stored.
//!
//! serde_json's `RawValue` does the scanning; what is hand-written is the splice itself,
//! which no JSON crate offers.

use std::borrow::Cow;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use spindle_store::KeyValue;

use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult};

/// Largest object stored, encoded. Requests are bounded by the body limit, but a patch or
/// an apply can grow an object far past its request (a JSON patch `copy` doubles a value
/// per operation), so the result is checked here, where every write passes. etcd refuses
/// requests above 1.5 MiB of protobuf; JSON is about twice as large as protobuf, which is
/// why kube-apiserver accepts 3 MiB bodies, and so this is the same 3 MiB of JSON.
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// An object as it is stored: everything but `metadata.resourceVersion`. Serialised
/// straight from the value, instead of cloning the object to remove one field. Refuses
/// objects above [`MAX_OBJECT_BYTES`] with the 413 kube-apiserver gives for them.
pub fn encode_for_store(v: &Value) -> ApiResult<Vec<u8>> {
    struct WithoutRv<'a>(&'a Map<String, Value>);
    impl Serialize for WithoutRv<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().filter(|(k, _)| *k != "resourceVersion"))
        }
    }
    struct Stored<'a>(&'a Map<String, Value>);
    impl Serialize for Stored<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                match v {
                    Value::Object(meta) if k == "metadata" => {
                        m.serialize_entry(k, &WithoutRv(meta))?
                    }
                    _ => m.serialize_entry(k, v)?,
                }
            }
            m.end()
        }
    }
    let out = match v {
        Value::Object(o) => serde_json::to_vec(&Stored(o)),
        other => serde_json::to_vec(other),
    };
    let out = out.map_err(|e| ApiError::internal(e.to_string()))?;
    if out.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::too_large(format_args!(
            "limit is {MAX_OBJECT_BYTES}"
        )));
    }
    Ok(out)
}

/// A member name: borrowed from the input unless it had escapes.
#[derive(Clone)]
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object's members as raw JSON, in order, unparsed.
#[derive(Clone)]
struct Members<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    fn parse(raw: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(raw)
    }

    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k.0 == name).map(|(_, v)| *v)
    }
}

/// Append `k` as a JSON string.
fn push_key(out: &mut String, k: &Key) {
    match &k.0 {
        // Borrowed means the input spelled it without escapes: valid as it is.
        Cow::Borrowed(s) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        Cow::Owned(s) => out.push_str(&Value::String(s.clone()).to_string()),
    }
}

/// A stored object, scanned once, for splicing and selector views.
pub struct StoredObject<'a> {
    key: &'a str,
    len: usize,
    rev: u64,
    top: Members<'a>,
}

impl<'a> StoredObject<'a> {
    pub fn parse(kv: &'a KeyValue) -> ApiResult<Self> {
        Self::parse_bytes(&kv.key, &kv.value, kv.mod_revision)
    }

    /// An object's stored bytes at revision `rev`.
    pub fn parse_bytes(key: &'a str, value: &'a [u8], rev: u64) -> ApiResult<Self> {
        let top = Members::parse(value)
            .map_err(|e| ApiError::internal(format!("corrupt object {key}: {e}")))?;
        Ok(StoredObject {
            key,
            len: value.len(),
            rev,
            top,
        })
    }

    /// The object as JSON with the given type meta (`"apiVersion":…,"kind":…`) first and
    /// its resourceVersion set from the store revision; the rest copied as stored.
    pub fn splice(&self, type_meta: &str) -> ApiResult<String> {
        let rv = format!("\"{}\"", self.rev);
        let mut out = String::with_capacity(self.len + 96);
        out.push('{');
        out.push_str(type_meta);
        let mut wrote_meta = false;
        for (k, raw) in &self.top.0 {
            match &*k.0 {
                "apiVersion" | "kind" => continue,
                "metadata" => {
                    let meta = Members::parse(raw.get().as_bytes()).map_err(|e| {
                        ApiError::internal(format!("corrupt object {}: {e}", self.key))
                    })?;
                    out.push_str(",\"metadata\":{");
                    let mut first = true;
                    let mut wrote_rv = false;
                    for (mk, mraw) in &meta.0 {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        push_key(&mut out, mk);
                        out.push(':');
                        if mk.0 == "resourceVersion" {
                            out.push_str(&rv);
                            wrote_rv = true;
                        } else {
                            out.push_str(mraw.get());
                        }
                    }
                    if !wrote_rv {
                        if !first {
                            out.push(',');
                        }
                        out.push_str("\"resourceVersion\":");
                        out.push_str(&rv);
                    }
                    out.push('}');
                    wrote_meta = true;
                }
                _ => {
                    out.push(',');
                    push_key(&mut out, k);
                    out.push(':');
                    out.push_str(raw.get());
                }
            }
        }
        if !wrote_meta {
            out.push_str(",\"metadata\":{\"resourceVersion\":");
            out.push_str(&rv);
            out.push('}');
        }
        out.push('}');
        Ok(out)
    }

    /// What `sel` reads of the object: the labels and the fields it names, nothing else
    /// (no managedFields, no spec or status beyond the selected fields).
    pub fn selector_view(&self, sel: &Selectors) -> Value {
        let mut view = Map::new();
        let paths = std::iter::once("metadata.labels").chain(sel.fields.paths());
        for path in paths {
            self.copy_leaf(path, &mut view);
        }
        Value::Object(view)
    }

    /// Copy the value at a dotted path into `view`, creating the objects along the way;
    /// absent or unparseable paths are left out (a selector treats them as empty).
    fn copy_leaf(&self, path: &str, view: &mut Map<String, Value>) {
        let mut parts = path.split('.').peekable();
        let mut level: Cow<Members> = Cow::Borrowed(&self.top);
        let mut at = view;
        while let Some(part) = parts.next() {
            let Some(raw) = level.get(part) else { return };
            if parts.peek().is_none() {
                if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
                    at.insert(part.to_string(), v);
                }
                return;
            }
            let Ok(next) = Members::parse(raw.get().as_bytes()) else {
                return;
            };
            level = Cow::Owned(next);
            let slot = at
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = slot else { return };
            at = m;
        }
    }
}

/// `"apiVersion":…,"kind":…` of a kind, for [`StoredObject::splice`].
pub fn type_meta(kind: &spindle_api::Kind) -> String {
    format!(
        "\"apiVersion\":{},\"kind\":{}",
        Value::String(kind.api_version()),
        Value::String(kind.kind.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(v: &Value, rev: u64) -> KeyValue {
        KeyValue {
            key: "/registry/pods/ns/p".into(),
            value: encode_for_store(v).unwrap_or_default().into(),
            mod_revision: rev,
        }
    }

    /// The spliced JSON of a stored object, parsed back.
    fn spliced(kv: &KeyValue, kind: &str) -> Value {
        let obj = StoredObject::parse(kv).expect("stored object parses");
        let text = obj.splice(&type_meta_of("v1", kind)).expect("splice");
        serde_json::from_str(&text).expect("spliced JSON parses")
    }

    #[test]
    fn stored_without_resource_version_and_spliced_with_the_revision() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "3", "labels": {"a": "b"},
                         "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"}});
        let stored = kv(&pod, 42);
        let text = String::from_utf8(stored.value.to_vec()).unwrap_or_default();
        assert!(!text.contains("resourceVersion"), "{text}");
        let mut want = pod.clone();
        want["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(spliced(&stored, "Pod"), want);
    }

    #[test]
    fn splice_replaces_a_stale_resource_version_and_adds_missing_metadata() {
        let stored = KeyValue {
            key: "k".into(),
            value: br#"{"metadata":{"resourceVersion":"1","name":"x\"y"},"spec":{}}"#
                .to_vec()
                .into(),
            mod_revision: 7,
        };
        let out = spliced(&stored, "ConfigMap");
        assert_eq!(
            out["metadata"],
            json!({"resourceVersion": "7", "name": "x\"y"})
        );
        assert_eq!(out["kind"], json!("ConfigMap"));
        let bare = KeyValue {
            key: "k".into(),
            value: br#"{"data":{"k\u0041":"v"}}"#.to_vec().into(),
            mod_revision: 9,
        };
        let out = spliced(&bare, "ConfigMap");
        assert_eq!(out["metadata"], json!({"resourceVersion": "9"}));
        assert_eq!(out["data"], json!({"kA": "v"}));
    }

    #[test]
    fn selector_view_holds_labels_and_selected_fields_only() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "x"},
                                      "managedFields": [{"manager": "m"}]},
                         "spec": {"nodeName": "n1", "containers": []},
                         "status": {"phase": "Running"}});
        let stored = kv(&pod, 5);
        let sel = Selectors {
            labels: crate::selectors::LabelSelector::parse("app=x").expect("labels"),
            fields: crate::selectors::FieldSelector::parse(
                "spec.nodeName=n1,status.phase!=Failed,metadata.name=p",
                &["spec.nodeName", "status.phase", "metadata.name"],
            )
            .expect("fields"),
        };
        let view = StoredObject::parse(&stored)
            .expect("parse")
            .selector_view(&sel);
        assert_eq!(
            view,
            json!({"metadata": {"labels": {"app": "x"}, "name": "p"},
                   "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
        );
        assert!(sel.matches(&view));
    }

    fn type_meta_of(av: &str, kind: &str) -> String {
        format!("\"apiVersion\":{},\"kind\":{}", json!(av), json!(kind))
    }
}
