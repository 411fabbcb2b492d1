//! Panic-free reading of objects in Kubernetes JSON form, and the apiserver's way of
//! printing times.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::UNKNOWN;

/// Kubernetes' `HumanDuration` of the time since `creation_timestamp`, or `<unknown>` when the
/// timestamp is missing or not RFC 3339.
pub fn human_age(creation_timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match creation_timestamp.and_then(parse_time) {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => UNKNOWN.to_string(),
    }
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: precise while small, coarser as it
/// grows, so a column of ages stays narrow.
pub(super) fn human_duration(d: chrono::Duration) -> String {
    // Go truncates fractional seconds toward zero; so does integer division here.
    let seconds = d.num_milliseconds() / 1000;
    // Clocks a second apart are "now"; anything further in the future is a bad timestamp.
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Read-only, panic-free access to an object in Kubernetes JSON form: anything missing or of
/// the wrong JSON type reads as empty, which is what Go's zero values give the real printers.
#[derive(Clone, Copy)]
pub(super) struct Obj<'a>(pub(super) &'a Value);

static NULL: Value = Value::Null;

impl<'a> Obj<'a> {
    pub(super) fn at(self, path: &[&str]) -> Obj<'a> {
        let mut v = self.0;
        for key in path {
            v = v.get(*key).unwrap_or(&NULL);
        }
        Obj(v)
    }

    pub(super) fn has(self, path: &[&str]) -> bool {
        !self.at(path).0.is_null()
    }

    pub(super) fn str_(self, path: &[&str]) -> &'a str {
        self.at(path).0.as_str().unwrap_or("")
    }

    pub(super) fn int_or(self, path: &[&str], default: i64) -> i64 {
        let v = self.at(path).0;
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .unwrap_or(default)
    }

    pub(super) fn int(self, path: &[&str]) -> i64 {
        self.int_or(path, 0)
    }

    pub(super) fn bool_(self, path: &[&str]) -> Option<bool> {
        self.at(path).0.as_bool()
    }

    pub(super) fn list(self, path: &[&str]) -> &'a [Value] {
        self.at(path).0.as_array().map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn map_len(self, path: &[&str]) -> usize {
        self.at(path).0.as_object().map_or(0, |m| m.len())
    }

    pub(super) fn time(self, path: &[&str]) -> Option<DateTime<Utc>> {
        parse_time(self.str_(path))
    }

    pub(super) fn name(self) -> Value {
        self.str_(&["metadata", "name"]).into()
    }

    pub(super) fn age(self, now: DateTime<Utc>) -> Value {
        self.since(&["metadata", "creationTimestamp"], now).into()
    }

    pub(super) fn since(self, path: &[&str], now: DateTime<Utc>) -> String {
        let ts = self.str_(path);
        human_age((!ts.is_empty()).then_some(ts), now)
    }

    /// Whether `status.conditions` holds a condition of this type with status "True".
    pub(super) fn condition_true(self, type_: &str) -> bool {
        self.list(&["status", "conditions"]).iter().any(|c| {
            let c = Obj(c);
            c.str_(&["type"]) == type_ && c.str_(&["status"]) == "True"
        })
    }
}
