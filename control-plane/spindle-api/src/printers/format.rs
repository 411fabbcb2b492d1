//! How the apiserver's printers format the values they share: labels, selectors,
//! container lists, IntOrStrings, short lists.

use serde_json::Value;

use super::obj::{parse_time, Obj};
use super::NONE;

pub(super) fn non_empty_or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// An IntOrString as the printers show it; "N/A" when unset.
pub(super) fn int_or_string(o: Obj<'_>) -> String {
    match o.0 {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "N/A".into(),
    }
}

/// Up to three entries, then a count of the rest, so one busy object cannot widen the table.
pub(super) fn list_with_more(items: impl Iterator<Item = String>, empty: &str) -> String {
    const MAX: usize = 3;
    let mut shown = Vec::with_capacity(MAX);
    let mut count = 0usize;
    for item in items {
        if shown.len() < MAX {
            shown.push(item);
        }
        count += 1;
    }
    if count > MAX {
        format!("{} + {} more...", shown.join(","), count - MAX)
    } else if shown.is_empty() {
        empty.to_string()
    } else {
        shown.join(",")
    }
}

/// Container names and images of a pod spec, each comma-joined.
pub(super) fn containers(pod_spec: Obj) -> (String, String) {
    let list = pod_spec.list(&["containers"]);
    let names: Vec<&str> = list.iter().map(|c| Obj(c).str_(&["name"])).collect();
    let images: Vec<&str> = list.iter().map(|c| Obj(c).str_(&["image"])).collect();
    (names.join(","), images.join(","))
}

/// `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
pub(super) fn format_labels(map: Obj) -> String {
    let mut pairs: Vec<String> = map
        .0
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return NONE.to_string();
    }
    pairs.sort_unstable();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector`: the selector in label-query syntax, `<none>` when it selects
/// by nothing, `<error>` when it cannot be parsed.
pub(super) fn format_label_selector(selector: Obj) -> String {
    match label_selector(selector) {
        s if s.is_empty() => NONE.to_string(),
        s => s,
    }
}

/// A LabelSelector in `kubectl get -l` syntax, requirements sorted by key as the apiserver does.
pub(super) fn label_selector(selector: Obj) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in selector
        .at(&["matchLabels"])
        .0
        .as_object()
        .into_iter()
        .flatten()
    {
        reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in selector.list(&["matchExpressions"]) {
        let e = Obj(e);
        let key = e.str_(&["key"]);
        let mut values: Vec<&str> = e
            .list(&["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e.str_(&["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// The default table's "Created At": RFC 3339 in UTC, Go's zero time when unset.
pub(super) fn created_at(o: Obj) -> String {
    let raw = o.str_(&["metadata", "creationTimestamp"]);
    if raw.is_empty() {
        return "0001-01-01T00:00:00Z".to_string();
    }
    parse_time(raw).map_or_else(
        || raw.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
