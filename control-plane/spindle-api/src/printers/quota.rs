//! The ResourceQuota table (`pods: 1/2` per resource, limits apart from requests); a
//! LimitRange has the default table.

use k8s_openapi::api::core;
use serde_json::Value;
use spindle_meta::quota::quantity;

use super::obj::Obj;
use super::{col, Printer, AGE, DEFAULT, NAME};

/// `printResourceQuota`: `name: used/hard` for each resource of `status.hard` in name
/// order, `limits.*` in the Limit column, the rest in the Request column.
fn usage(o: Obj<'_>, limits: bool) -> Value {
    let hard = o.at(&["status", "hard"]).0.as_object();
    let used = o.at(&["status", "used"]);
    let mut names: Vec<&String> = hard
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("limits.") == limits)
        .collect();
    names.sort_unstable();
    let cells: Vec<String> = names
        .into_iter()
        .map(|k| {
            let h = o.at(&["status", "hard", k]).0;
            format!("{k}: {}/{}", canonical(used.at(&[k]).0), canonical(h))
        })
        .collect();
    cells.join(", ").into()
}

/// A quantity as Go's `Quantity.String()` writes it; "0" when absent.
fn canonical(v: &Value) -> String {
    match quantity(v) {
        Some(q) => q.to_string(),
        None => v.as_str().unwrap_or("0").to_string(),
    }
}

pub(super) static RESOURCE_QUOTA: Printer = Printer::new(&[
    NAME,
    AGE,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
        |o, _| usage(o, false),
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        |o, _| usage(o, true),
    ),
]);

printed! {
    core::v1::ResourceQuota => RESOURCE_QUOTA,
    core::v1::LimitRange => DEFAULT,
}
