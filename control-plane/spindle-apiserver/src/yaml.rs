//! YAML request bodies with alias expansion bounded (the bug class of CVE-2019-11253).
//!
//! An alias replays its anchored node, so a list of M aliases to an anchor of N scalars
//! decodes into M×N values from about 3(M+N) bytes: 100 KiB become 4e8 values. go-yaml
//! (and so kube-apiserver) refuses a document whose decoding grows too far beyond its
//! text with "document contains excessive aliasing". serde_norway only limits the number
//! of alias jumps, which does not bound the size, and has no setting for this; so the
//! value is built here by a visitor that charges every node it makes against a budget
//! proportional to the input and stops as soon as the budget is spent. The expansion is
//! lazy (one event at a time), so memory stays within the budget.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// What a decoded node costs beyond its text, roughly the bytes it takes in memory.
const NODE_COST: usize = 8;
/// Budget per input byte. A dense document without aliases costs about 4.5 per byte
/// (`[a,a,a]`: two bytes per nine units), so aliases may add about 10% to the densest
/// documents (go-yaml's allowance for large ones) and more to ordinary ones, whose text
/// costs less per byte. For a 3 MiB body that is at most about 2 M nodes; before this
/// bound applies serde_norway holds the document's events in memory, which for a dense
/// 3 MiB document costs more than the nodes (about 300 MB with or without aliases).
const COST_PER_BYTE: usize = 5;
/// Budget every document gets on top, for ordinary small uses of anchors.
const BASE_BUDGET: usize = 1024 * 1024;

/// The message go-yaml gives for the same refusal.
pub const EXCESSIVE_ALIASING: &str = "yaml: document contains excessive aliasing";

/// Decode one YAML document into JSON values, refusing excessive alias expansion.
pub fn from_slice(raw: &[u8]) -> Result<Value, serde_norway::Error> {
    let budget = Cell::new(raw.len().saturating_mul(COST_PER_BYTE) + BASE_BUDGET);
    Budgeted(&budget).deserialize(serde_norway::Deserializer::from_slice(raw))
}

#[derive(Clone, Copy)]
struct Budgeted<'a>(&'a Cell<usize>);

impl Budgeted<'_> {
    fn charge<E: serde::de::Error>(&self, text: usize) -> Result<(), E> {
        let cost = NODE_COST.saturating_add(text);
        match self.0.get().checked_sub(cost) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(EXCESSIVE_ALIASING)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A mapping key: a string, charged like any other node.
struct Key<'a>(Budgeted<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        self.0.charge(s.len())?;
        Ok(s)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key(self))? {
            let v = map.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bomb(n: usize) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b}}\nx: &a [{}]\ny: [{}]\n",
            vec!["x"; n].join(","),
            vec!["*a"; n].join(",")
        )
    }

    #[test]
    fn ordinary_documents_and_small_anchors_decode() {
        let doc = "a: &x {k: [1, 2.5, true, null, s]}\nb: *x\nc: ~\n";
        let v = from_slice(doc.as_bytes()).unwrap();
        assert_eq!(v["b"], v["a"]);
        assert_eq!(v["a"]["k"], serde_json::json!([1, 2.5, true, null, "s"]));
        assert_eq!(
            from_slice(bomb(200).as_bytes()).unwrap()["y"][199][199],
            "x"
        );
    }

    #[test]
    fn alias_bombs_are_refused_quickly() {
        let start = std::time::Instant::now();
        let err = from_slice(bomb(20_000).as_bytes()).unwrap_err();
        assert!(err.to_string().contains(EXCESSIVE_ALIASING), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        // A long string replayed many times is as large as many small nodes.
        let long = format!(
            "x: &a \"{}\"\ny: [{}]\n",
            "z".repeat(100_000),
            vec!["*a"; 1000].join(",")
        );
        assert!(from_slice(long.as_bytes()).is_err());
    }
}
