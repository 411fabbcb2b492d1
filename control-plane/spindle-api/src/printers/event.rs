//! The Event table, for core/v1 Events and for events.k8s.io/v1 Events (the same stored
//! objects, which the apiserver prints with one printer): `V1` says which field names the
//! object uses, since events.k8s.io/v1 renames the core ones.

use chrono::{DateTime, Utc};
use k8s_openapi::api::{core, events};

use super::format::non_empty_or;
use super::obj::Obj;
use super::{col, wide, Column, Printer, NAME};

const fn columns<const V1: bool>() -> [Column; 10] {
    [
        col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded.", |o, now| {
            last_seen::<V1>(o, now).into()
        }),
        col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future", |o, _| {
            o.str_(&["type"]).into()
        }),
        col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", |o, _| {
            o.str_(&["reason"]).into()
        }),
        col("Object", "string", "The object that this event is about.", |o, _| {
            object::<V1>(o).into()
        }),
        wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.", |o, _| {
            involved::<V1>(o).str_(&["fieldPath"]).into()
        }),
        wide("Source", "string", "The component reporting this event.", |o, _| {
            source::<V1>(o).into()
        }),
        col("Message", "string", "A human-readable description of the status of this operation.", |o, _| {
            o.str_(pick::<V1>(&["message"], &["note"])).trim().into()
        }),
        wide("First Seen", "string", "The time at which the event was first recorded.", |o, now| {
            first_seen::<V1>(o, now).into()
        }),
        wide("Count", "integer", "The number of times this event has occurred.", |o, _| {
            count::<V1>(o).into()
        }),
        Column {
            priority: 1,
            ..NAME
        },
    ]
}

pub(super) static EVENT: Printer = Printer::new(&columns::<false>());
pub(super) static EVENT_V1: Printer = Printer::new(&columns::<true>());

printed! {
    core::v1::Event => EVENT,
    events::v1::Event => EVENT_V1,
}

fn pick<const V1: bool>(
    core: &'static [&'static str],
    new: &'static [&'static str],
) -> &'static [&'static str] {
    if V1 {
        new
    } else {
        core
    }
}

fn involved<const V1: bool>(o: Obj) -> Obj {
    o.at(pick::<V1>(&["involvedObject"], &["regarding"]))
}

// Zero timestamps arrive as null or are left out; either way the next source stands in.
fn first_seen<const V1: bool>(o: Obj, now: DateTime<Utc>) -> String {
    let first_at = pick::<V1>(&["firstTimestamp"], &["deprecatedFirstTimestamp"]);
    if o.str_(first_at).is_empty() {
        o.since(&["eventTime"], now)
    } else {
        o.since(first_at, now)
    }
}

fn last_seen<const V1: bool>(o: Obj, now: DateTime<Utc>) -> String {
    if o.has(&["series"]) {
        return o.since(&["series", "lastObservedTime"], now);
    }
    let last_at = pick::<V1>(&["lastTimestamp"], &["deprecatedLastTimestamp"]);
    if o.str_(last_at).is_empty() {
        first_seen::<V1>(o, now)
    } else {
        o.since(last_at, now)
    }
}

fn count<const V1: bool>(o: Obj) -> i64 {
    if o.has(&["series"]) {
        return o.int(&["series", "count"]);
    }
    match o.int(pick::<V1>(&["count"], &["deprecatedCount"])) {
        // Singleton events in the new API carry no count.
        0 => 1,
        n => n,
    }
}

fn object<const V1: bool>(o: Obj) -> String {
    let involved = involved::<V1>(o);
    let kind = involved.str_(&["kind"]).to_lowercase();
    match involved.str_(&["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    }
}

fn source<const V1: bool>(o: Obj) -> String {
    let source = o.at(pick::<V1>(&["source"], &["deprecatedSource"]));
    let component = non_empty_or(
        source.str_(&["component"]),
        o.str_(&["reportingController"]),
    );
    let host = non_empty_or(source.str_(&["host"]), o.str_(&["reportingInstance"]));
    if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    }
}
