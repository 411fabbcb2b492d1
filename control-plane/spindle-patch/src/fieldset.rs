//! Sets of field paths in the Kubernetes FieldsV1 encoding, and navigation of JSON values
//! by such paths.
//!
//! A path is a list of FieldsV1 element strings: `f:<field>`, `k:<json object of key
//! fields>`, `v:<json value>` or `i:<index>`. Keeping the encoded form as the identity means
//! sets read from stored `managedFields` and sets computed here compare directly.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub(crate) type Path = Vec<String>;

pub(crate) fn field(name: &str) -> String {
    format!("f:{name}")
}

pub(crate) fn keyed(key: &str, value: &Value) -> String {
    let mut map = Map::new();
    map.insert(key.to_string(), value.clone());
    format!("k:{}", Value::Object(map))
}

pub(crate) fn valued(value: &Value) -> String {
    format!("v:{value}")
}

/// A tree of path elements; a node is in the set when `member` is true. Intermediate nodes
/// exist only to reach members below them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get(element)?;
        }
        Some(node)
    }

    pub(crate) fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// True when `path` or anything below it is a member.
    pub(crate) fn owns_at_or_below(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Drops `path` itself, keeping members below it. Returns whether anything changed.
    pub(crate) fn remove(&mut self, path: &[String]) -> bool {
        self.edit(path, |node| std::mem::replace(&mut node.member, false))
    }

    /// Drops `path` and every member below it. Returns whether anything changed.
    pub(crate) fn remove_subtree(&mut self, path: &[String]) -> bool {
        self.edit(path, |node| {
            let had = !node.is_empty();
            *node = FieldSet::default();
            had
        })
    }

    fn edit(&mut self, path: &[String], f: impl FnOnce(&mut FieldSet) -> bool) -> bool {
        match path.split_first() {
            None => f(self),
            Some((first, rest)) => {
                let Some(child) = self.children.get_mut(first) else {
                    return false;
                };
                let changed = child.edit(rest, f);
                if child.is_empty() {
                    self.children.remove(first);
                }
                changed
            }
        }
    }

    /// Every member path, parents before children, siblings in FieldsV1 key order.
    pub(crate) fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_members(&mut prefix, &mut out);
        out
    }

    fn collect_members(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_members(prefix, out);
            prefix.pop();
        }
    }

    pub(crate) fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, child) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union(child);
        }
    }

    /// Members of `self` that are not members of `other`.
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for path in other.members() {
            out.remove(&path);
        }
        out
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        // Kubernetes writes "." first, then the children sorted.
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            map.insert(element.clone(), child.to_json());
        }
        Value::Object(map)
    }

    /// Reads a FieldsV1 object. Anything that is not an object is not a set.
    pub(crate) fn from_json(value: &Value) -> Option<FieldSet> {
        let map = value.as_object()?;
        let mut set = FieldSet::default();
        for (element, child) in map {
            if element == "." {
                set.member = true;
                continue;
            }
            let mut child_set = FieldSet::from_json(child)?;
            // `{}` is a leaf: the path itself is owned.
            if child_set.children.is_empty() {
                child_set.member = true;
            }
            set.children.insert(element.clone(), child_set);
        }
        Some(set)
    }
}

/// Renders a path the way Kubernetes does in conflict messages, e.g.
/// `.spec.template.spec.containers[name="web"].image`.
pub(crate) fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(keys) = element.strip_prefix("k:") {
            match serde_json::from_str::<Map<String, Value>>(keys) {
                Ok(keys) => {
                    let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    out.push('[');
                    out.push_str(&parts.join(","));
                    out.push(']');
                }
                Err(_) => {
                    out.push('[');
                    out.push_str(keys);
                    out.push(']');
                }
            }
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str("[=");
            out.push_str(value);
            out.push(']');
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push('[');
            out.push_str(index);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(element);
        }
    }
    out
}

/// Where one path element sits inside its parent value.
enum Slot {
    Field(String),
    Index(usize),
}

fn locate(parent: &Value, element: &str) -> Option<Slot> {
    if let Some(name) = element.strip_prefix("f:") {
        let map = parent.as_object()?;
        return map
            .contains_key(name)
            .then(|| Slot::Field(name.to_string()));
    }
    let list = parent.as_array()?;
    if let Some(keys) = element.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
        return list
            .iter()
            .position(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))
            .map(Slot::Index);
    }
    if let Some(value) = element.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        return list.iter().position(|item| *item == value).map(Slot::Index);
    }
    if let Some(index) = element.strip_prefix("i:") {
        let index: usize = index.parse().ok()?;
        return (index < list.len()).then_some(Slot::Index(index));
    }
    None
}

pub(crate) fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = value;
    for element in path {
        current = match locate(current, element)? {
            Slot::Field(name) => current.get(name.as_str())?,
            Slot::Index(index) => current.get(index)?,
        };
    }
    Some(current)
}

/// Removes the value at `path` if it exists. Returns whether something was removed.
pub(crate) fn remove_at(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for element in parents {
        current = match locate(current, element) {
            Some(Slot::Field(name)) => match current.get_mut(name.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Some(Slot::Index(index)) => match current.get_mut(index) {
                Some(v) => v,
                None => return false,
            },
            None => return false,
        };
    }
    match locate(current, last) {
        Some(Slot::Field(name)) => current
            .as_object_mut()
            .and_then(|map| map.shift_remove(&name))
            .is_some(),
        Some(Slot::Index(index)) => match current.as_array_mut() {
            Some(list) => {
                list.remove(index);
                true
            }
            None => false,
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(elements: &[&str]) -> Path {
        elements.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn json_round_trip_with_dot_members() {
        let raw = json!({"f:data": {".": {}, "f:a": {}}, "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}});
        let set = FieldSet::from_json(&raw).unwrap();
        assert!(set.contains(&p(&["f:data"])));
        assert!(set.contains(&p(&["f:data", "f:a"])));
        assert!(!set.contains(&p(&["f:spec"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"web\"}"])));
        assert_eq!(set.to_json(), raw);
    }

    #[test]
    fn remove_prunes_empty_parents() {
        let mut set = FieldSet::default();
        set.insert(&p(&["f:data", "f:a"]));
        assert!(set.remove(&p(&["f:data", "f:a"])));
        assert!(set.is_empty());
        assert_eq!(set.to_json(), json!({}));
    }

    #[test]
    fn display_matches_kubernetes() {
        assert_eq!(
            display(&p(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"web\"}",
                "f:image"
            ])),
            ".spec.containers[name=\"web\"].image"
        );
        assert_eq!(
            display(&p(&["f:metadata", "f:finalizers", "v:\"x\""])),
            ".metadata.finalizers[=\"x\"]"
        );
    }

    #[test]
    fn lookup_and_remove_through_keyed_lists() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let path = p(&["f:spec", "f:containers", "k:{\"name\":\"b\"}", "f:image"]);
        assert_eq!(lookup(&v, &path), Some(&json!("2")));
        assert!(remove_at(&mut v, &path));
        assert_eq!(v["spec"]["containers"][1], json!({"name": "b"}));
        assert!(remove_at(
            &mut v,
            &p(&["f:spec", "f:containers", "k:{\"name\":\"a\"}"])
        ));
        assert_eq!(v["spec"]["containers"], json!([{"name": "b"}]));
        assert!(!remove_at(&mut v, &p(&["f:nope", "f:x"])));
    }
}
