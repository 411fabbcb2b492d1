//! Server-side apply and `metadata.managedFields` bookkeeping.
//!
//! This is a schema-light take on Kubernetes' structured-merge-diff: list identity comes from
//! the same table strategic merge patch uses ([`crate::strategy`]), every map is granular,
//! and lists without a merge key are atomic.

use serde_json::{Map, Value};

use crate::fieldset::{display, field, keyed, lookup, remove_at, valued, FieldSet, Path};
use crate::strategy::{list_strategy, ListStrategy};

/// A field the applier wants to change while another manager owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager that owns the field now.
    pub manager: String,
    /// The field in Kubernetes notation, e.g. `.data.a` or
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change; retry with `force` to take them.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Formats conflicts the way the Kubernetes API server words its 409 message, minus the
/// "using <apiVersion>" part, which the caller knows better than we do.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\": {}",
            only.manager, only.field
        );
    }
    let mut managers: Vec<&str> = Vec::new();
    for c in conflicts {
        if !managers.contains(&c.manager.as_str()) {
            managers.push(&c.manager);
        }
    }
    let groups: Vec<String> = managers
        .into_iter()
        .map(|manager| {
            let fields: Vec<String> = conflicts
                .iter()
                .filter(|c| c.manager == manager)
                .map(|c| format!("- {}", c.field))
                .collect();
            format!("conflicts with \"{manager}\":\n{}", fields.join("\n"))
        })
        .collect();
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        groups.join("\n")
    )
}

/// Server-managed metadata that nobody owns and apply never writes.
const SERVER_METADATA: [&str; 8] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Whether the field `name` under the path `names` is excluded from ownership.
fn unowned(names: &[String], name: &str) -> bool {
    match names {
        [] => name == "apiVersion" || name == "kind",
        [meta] if meta == "metadata" => {
            name == "name" || name == "namespace" || SERVER_METADATA.contains(&name)
        }
        _ => false,
    }
}

fn strategy_at(names: &[String]) -> ListStrategy {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    list_strategy(&names)
}

/// The merge key of a list, if the list really is a list of maps carrying it; otherwise the
/// list is treated as atomic.
fn key_of(strategy: ListStrategy, items: &[Value]) -> Option<&'static str> {
    match strategy {
        ListStrategy::MergeByKey(key) if items.iter().all(Value::is_object) => Some(key),
        _ => None,
    }
}

/// Server-side apply of `applied` (the user's partial object) onto `live` (None when the
/// object does not exist yet). Returns the new full object with `metadata.managedFields`
/// updated for `manager` with operation `Apply`.
///
/// Fields owned by another manager whose value would change are conflicts unless `force`,
/// in which case ownership moves to `manager`. Fields this manager applied before but no
/// longer applies are removed unless another manager owns them.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    if manager.is_empty() {
        return Err(ApplyError::Invalid(
            "PATCH with apply requires a fieldManager".to_string(),
        ));
    }
    let Value::Object(applied_map) = applied else {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".to_string(),
        ));
    };
    if applied_map
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|mf| !mf.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".to_string(),
        ));
    }
    let clean = sanitize(applied_map);

    let mut result = match live {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => {
            return Err(ApplyError::Invalid(
                "the live object is not an object".to_string(),
            ))
        }
        None => Value::Object(Map::new()),
    };
    let mut entries = read_entries(Some(&result));
    let mine = entries.iter().position(|e| e.is(manager, "Apply"));

    let mut new_set = FieldSet::default();
    collect_applied(&clean, &mut Vec::new(), &mut Vec::new(), &mut new_set)?;

    // Conflicts: an owned field whose live value the apply would change.
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for path in new_set.members() {
        if !path.last().is_some_and(|e| e.starts_with("f:")) {
            // List items are identified by their key or value, so they cannot differ.
            continue;
        }
        let (Some(live_value), Some(applied_value)) =
            (lookup(&result, &path), lookup(&clean, &path))
        else {
            continue;
        };
        if live_value == applied_value {
            continue;
        }
        for (index, entry) in entries.iter().enumerate() {
            if Some(index) != mine && entry.set.contains(&path) {
                conflicts.push(Conflict {
                    manager: entry.manager.clone(),
                    field: display(&path),
                });
                taken.push((index, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (index, path) in taken {
        if entries[index].set.remove(&path) {
            entries[index].changed = true;
        }
    }

    merge_applied(&mut result, &clean, &mut Vec::new());

    // Fields this manager stopped applying go away unless someone else still owns them.
    let old_set = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut others = FieldSet::default();
    for (index, entry) in entries.iter().enumerate() {
        if Some(index) != mine {
            others.union(&entry.set);
        }
    }
    for path in old_set.difference(&new_set).members() {
        if others.owns_at_or_below(&path) || is_item_key_field(&path) {
            continue;
        }
        remove_at(&mut result, &path);
    }

    if manager == KUBECTL_SSA_MANAGER {
        sync_last_applied(&mut result, applied_map);
    }

    match mine {
        Some(index) => {
            let entry = &mut entries[index];
            entry.set = new_set;
            entry.changed = true;
            entry.stamp(api_version, now);
        }
        None => entries.push(Entry::new(manager, "Apply", new_set, api_version, now)),
    }
    write_entries(&mut result, entries);
    Ok(result)
}

/// Records an ordinary write (create, update or patch; operation `Update`) in
/// `new.metadata.managedFields`: `manager` now owns every field whose value changed or was
/// added, other managers lose those fields, and managers left with nothing are dropped.
/// Does nothing when `manager` is empty.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
) {
    if manager.is_empty() || !new.is_object() {
        return;
    }
    // A client that sends managedFields (e.g. a PUT of a fetched object, or a JSON patch that
    // rewrites them) decides the starting point; otherwise the stored ones carry over.
    let sent = new
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some();
    let mut entries = if sent {
        read_entries(Some(new))
    } else {
        read_entries(old)
    };

    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    let empty = Value::Object(Map::new());
    diff_map(
        old.unwrap_or(&empty),
        new,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );

    let mine = entries.iter().position(|e| e.is(manager, "Update"));
    let changed_paths = changed.members();
    let removed_paths = removed.members();
    for (index, entry) in entries.iter_mut().enumerate() {
        let mut touched = false;
        for path in &removed_paths {
            touched |= entry.set.remove_subtree(path);
        }
        if Some(index) != mine {
            for path in &changed_paths {
                touched |= entry.set.remove(path);
            }
        }
        entry.changed |= touched;
    }
    if !changed.is_empty() {
        match mine {
            Some(index) => {
                let entry = &mut entries[index];
                entry.set.union(&changed);
                entry.changed = true;
                entry.stamp(api_version, now);
            }
            None => entries.push(Entry::new(manager, "Update", changed, api_version, now)),
        }
    }
    write_entries(new, entries);
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const KUBECTL_SSA_MANAGER: &str = "kubectl";

/// Keeps client-side apply's annotation truthful after `kubectl apply --server-side`, as the
/// Kubernetes API server does: otherwise a later client-side apply would diff against a
/// stale configuration and undo or resurrect fields. Only an existing annotation is updated.
fn sync_last_applied(result: &mut Value, applied: &Map<String, Value>) {
    let Some(annotation) = result
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(LAST_APPLIED))
    else {
        return;
    };
    let mut config = Value::Object(applied.clone());
    if let Some(annotations) = config
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(LAST_APPLIED);
    }
    // Go encodes maps with sorted keys and a trailing newline; match it so the annotation
    // reads the same as one written by a Kubernetes server.
    *annotation = Value::String(format!("{}\n", sorted(&config)));
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// One `managedFields` entry with its field set parsed.
struct Entry {
    raw: Map<String, Value>,
    manager: String,
    operation: String,
    set: FieldSet,
    /// The set was edited and must be written back (or dropped if empty).
    changed: bool,
}

impl Entry {
    fn new(manager: &str, operation: &str, set: FieldSet, api_version: &str, now: &str) -> Self {
        let mut raw = Map::new();
        raw.insert("manager".into(), Value::String(manager.into()));
        raw.insert("operation".into(), Value::String(operation.into()));
        raw.insert("apiVersion".into(), Value::String(api_version.into()));
        raw.insert("time".into(), Value::String(now.into()));
        raw.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        Entry {
            raw,
            manager: manager.into(),
            operation: operation.into(),
            set,
            changed: true,
        }
    }

    /// Entries are identified by manager and operation; entries written through a
    /// subresource (e.g. `status`) belong to that subresource and are never this entry.
    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self
                .raw
                .get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    }

    fn stamp(&mut self, api_version: &str, now: &str) {
        self.raw
            .insert("apiVersion".into(), Value::String(api_version.into()));
        self.raw.insert("time".into(), Value::String(now.into()));
        self.raw
            .insert("fieldsType".into(), Value::String("FieldsV1".into()));
    }
}

fn read_entries(object: Option<&Value>) -> Vec<Entry> {
    let Some(list) = object
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|raw| Entry {
            manager: str_field(raw, "manager"),
            operation: str_field(raw, "operation"),
            set: raw
                .get("fieldsV1")
                .and_then(FieldSet::from_json)
                .unwrap_or_default(),
            raw: raw.clone(),
            changed: false,
        })
        .collect()
}

fn str_field(raw: &Map<String, Value>, name: &str) -> String {
    raw.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !(e.changed && e.set.is_empty()))
        .map(|mut e| {
            if e.changed {
                e.raw.insert("fieldsV1".into(), e.set.to_json());
            }
            Value::Object(e.raw)
        })
        .collect();
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    if let Some(metadata) = metadata.as_object_mut() {
        if list.is_empty() {
            metadata.shift_remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// The applied object minus server-managed metadata and nulls: nulls carry no value to own.
fn sanitize(applied: &Map<String, Value>) -> Value {
    let mut clean = strip_nulls(&Value::Object(applied.clone()));
    if let Some(metadata) = clean.get_mut("metadata").and_then(Value::as_object_mut) {
        for name in SERVER_METADATA {
            metadata.shift_remove(name);
        }
    }
    clean
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// The fields an apply configuration sets: scalars and atomic lists as leaves, items of
/// associative and set lists as members. Maps themselves are not owned, as in Kubernetes.
fn collect_applied(
    value: &Value,
    names: &mut Vec<String>,
    path: &mut Path,
    set: &mut FieldSet,
) -> Result<(), ApplyError> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    for (name, child) in map {
        if unowned(names, name) {
            continue;
        }
        names.push(name.clone());
        path.push(field(name));
        collect_applied_value(child, names, path, set)?;
        path.pop();
        names.pop();
    }
    Ok(())
}

fn collect_applied_value(
    value: &Value,
    names: &mut Vec<String>,
    path: &mut Path,
    set: &mut FieldSet,
) -> Result<(), ApplyError> {
    match value {
        Value::Object(_) => collect_applied(value, names, path, set),
        Value::Array(items) => {
            let strategy = strategy_at(names);
            if let Some(key) = key_of(strategy, items) {
                let mut seen: Vec<&Value> = Vec::new();
                for item in items {
                    let id = item.get(key).filter(|v| !v.is_null()).ok_or_else(|| {
                        ApplyError::Invalid(format!(
                            "{}: element is missing its key field {key:?}",
                            display(path)
                        ))
                    })?;
                    if seen.contains(&id) {
                        return Err(ApplyError::Invalid(format!(
                            "{}: duplicate entries for key [{key}={id}]",
                            display(path)
                        )));
                    }
                    seen.push(id);
                    path.push(keyed(key, id));
                    set.insert(path);
                    collect_applied(item, names, path, set)?;
                    path.pop();
                }
            } else if strategy == ListStrategy::MergePrimitives
                && items.iter().all(|i| !i.is_object() && !i.is_array())
            {
                for item in items {
                    path.push(valued(item));
                    set.insert(path);
                    path.pop();
                }
            } else {
                set.insert(path);
            }
            Ok(())
        }
        _ => {
            set.insert(path);
            Ok(())
        }
    }
}

/// Merges the applied configuration into the live object: maps recursively, associative
/// lists by key, set lists as unions, everything else replaced.
fn merge_applied(live: &mut Value, applied: &Value, names: &mut Vec<String>) {
    let (Some(live_map), Some(applied_map)) = (live.as_object_mut(), applied.as_object()) else {
        *live = applied.clone();
        return;
    };
    for (name, value) in applied_map {
        names.push(name.clone());
        match live_map.get_mut(name) {
            Some(existing) => merge_applied_value(existing, value, names),
            None => {
                live_map.insert(name.clone(), value.clone());
            }
        }
        names.pop();
    }
}

fn merge_applied_value(live: &mut Value, applied: &Value, names: &mut Vec<String>) {
    match (live, applied) {
        (live @ Value::Object(_), Value::Object(_)) => merge_applied(live, applied, names),
        (Value::Array(live_items), Value::Array(applied_items)) => {
            let strategy = strategy_at(names);
            if let (Some(key), true) = (
                key_of(strategy, applied_items),
                live_items.iter().all(Value::is_object),
            ) {
                for item in applied_items {
                    let id = item.get(key);
                    match live_items.iter_mut().find(|l| l.get(key) == id) {
                        Some(existing) => merge_applied(existing, item, names),
                        None => live_items.push(item.clone()),
                    }
                }
            } else if strategy == ListStrategy::MergePrimitives {
                for item in applied_items {
                    if !live_items.contains(item) {
                        live_items.push(item.clone());
                    }
                }
            } else {
                *live_items = applied_items.clone();
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// A key field inside an associative-list item lives and dies with the item.
fn is_item_key_field(path: &[String]) -> bool {
    let [.., item, last] = path else {
        return false;
    };
    let (Some(keys), Some(name)) = (item.strip_prefix("k:"), last.strip_prefix("f:")) else {
        return false;
    };
    serde_json::from_str::<Map<String, Value>>(keys).is_ok_and(|keys| keys.contains_key(name))
}

/// Collects what an update changed: `changed` gets added or modified fields (added maps and
/// list items as members too, the way Kubernetes records creations), `removed` gets fields
/// that disappeared.
fn diff_map(
    old: &Value,
    new: &Value,
    names: &mut Vec<String>,
    path: &mut Path,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let (Some(old_map), Some(new_map)) = (old.as_object(), new.as_object()) else {
        return;
    };
    for (name, value) in new_map {
        // Equal subtrees hold no change: skipping them with a plain comparison is much
        // cheaper than walking them (most of an update leaves most of the object alone).
        if old_map.get(name) == Some(value) || unowned(names, name) {
            continue;
        }
        names.push(name.clone());
        path.push(field(name));
        diff_value(old_map.get(name), value, names, path, changed, removed);
        path.pop();
        names.pop();
    }
    for name in old_map.keys() {
        if !new_map.contains_key(name) && !unowned(names, name) {
            path.push(field(name));
            removed.insert(path);
            path.pop();
        }
    }
}

fn diff_value(
    old: Option<&Value>,
    new: &Value,
    names: &mut Vec<String>,
    path: &mut Path,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let Some(old) = old else {
        insert_all(new, names, path, changed);
        return;
    };
    match (old, new) {
        (Value::Object(_), Value::Object(_)) => diff_map(old, new, names, path, changed, removed),
        (Value::Array(old_items), Value::Array(new_items)) => {
            let strategy = strategy_at(names);
            let key = key_of(strategy, new_items)
                .filter(|key| {
                    old_items
                        .iter()
                        .all(|i| i.is_object() && i.get(*key).is_some())
                })
                .filter(|key| new_items.iter().all(|i| i.get(*key).is_some()));
            if let Some(key) = key {
                for item in new_items {
                    let id = item.get(key).unwrap_or(&Value::Null);
                    path.push(keyed(key, id));
                    let before = old_items.iter().find(|o| o.get(key) == Some(id));
                    match before {
                        Some(before) => diff_map(before, item, names, path, changed, removed),
                        None => insert_all(item, names, path, changed),
                    }
                    path.pop();
                }
                for item in old_items {
                    let id = item.get(key).unwrap_or(&Value::Null);
                    if !new_items.iter().any(|n| n.get(key) == Some(id)) {
                        path.push(keyed(key, id));
                        removed.insert(path);
                        path.pop();
                    }
                }
            } else if strategy == ListStrategy::MergePrimitives {
                for item in new_items.iter().filter(|i| !old_items.contains(i)) {
                    path.push(valued(item));
                    changed.insert(path);
                    path.pop();
                }
                for item in old_items.iter().filter(|i| !new_items.contains(i)) {
                    path.push(valued(item));
                    removed.insert(path);
                    path.pop();
                }
            } else if old != new {
                changed.insert(path);
            }
        }
        _ if old != new => insert_all(new, names, path, changed),
        _ => {}
    }
}

/// Marks a freshly added value and everything inside it as owned.
fn insert_all(value: &Value, names: &mut Vec<String>, path: &mut Path, set: &mut FieldSet) {
    // Root-level metadata is never owned itself, only what is inside it.
    let is_root_metadata = names.len() == 1 && names[0] == "metadata";
    if !is_root_metadata {
        set.insert(path);
    }
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                if unowned(names, name) {
                    continue;
                }
                names.push(name.clone());
                path.push(field(name));
                insert_all(child, names, path, set);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => {
            let strategy = strategy_at(names);
            if let Some(key) = key_of(strategy, items) {
                for item in items {
                    let Some(id) = item.get(key) else {
                        continue;
                    };
                    path.push(keyed(key, id));
                    insert_all(item, names, path, set);
                    path.pop();
                }
            } else if strategy == ListStrategy::MergePrimitives {
                for item in items {
                    path.push(valued(item));
                    set.insert(path);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
