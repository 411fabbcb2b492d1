//! Server-side `kubectl get` tables: one [`Printer`] per kind, reached from the kind's
//! registry entry.
//!
//! kubectl has no client-side printers for built-in kinds any more: it prints whatever cells
//! the server sends, verbatim. So every rule here (what "Status" of a pod says, how ages are
//! rounded, where `<none>` appears) follows the real apiserver's printers, because users and
//! scripts compare against what a real cluster shows.
//!
//! Each [`Column`] carries the function that renders its cell, so a printer's header and
//! its rows cannot drift apart. The apiserver always renders the wide (priority 1) cells and
//! lets kubectl hide them, so a row has one cell per column.

/// `Printed` for each k8s-openapi type with the printer given.
macro_rules! printed {
    ($($ty:ty => $printer:ident),* $(,)?) => {
        $(impl $crate::printers::Printed for $ty {
            const PRINTER: &'static $crate::printers::Printer = &$printer;
        })*
    };
}

mod apps;
mod autoscaling;
mod batch;
mod certificates;
mod cluster;
mod config;
mod event;
mod format;
mod obj;
mod pod;
mod policy;
mod priority_class;
mod quota;
mod rbac;
mod service;
mod storage;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use obj::human_age;
use obj::Obj;

/// Renders one cell of a row from the object (in Kubernetes JSON form) at time `now`.
type Cell = fn(Obj<'_>, DateTime<Utc>) -> Value;

/// One `columnDefinitions` entry of a `meta.k8s.io/v1` Table, with the cell it heads.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
    #[serde(skip)]
    cell: Cell,
}

/// A kind's table: its columns, each with its cell.
#[derive(Debug)]
pub struct Printer {
    columns: &'static [Column],
}

impl Printer {
    const fn new(columns: &'static [Column]) -> Printer {
        Printer { columns }
    }

    pub fn columns(&self) -> &'static [Column] {
        self.columns
    }

    /// One row's cells, one per column, wide ones included.
    pub fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let o = Obj(obj);
        self.columns.iter().map(|c| (c.cell)(o, now)).collect()
    }
}

/// The kinds' printers, by the k8s-openapi type of the kind, so that registering a kind
/// brings its printer along. Kinds without a printer of their own get the apiserver's
/// default table: Name and "Created At".
pub trait Printed {
    const PRINTER: &'static Printer = &DEFAULT;
}

const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
    cell: Cell,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
        cell,
    }
}

/// A column `kubectl get -o wide` shows and plain `kubectl get` hides.
const fn wide(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
    cell: Cell,
) -> Column {
    Column {
        priority: 1,
        ..col(name, type_, description, cell)
    }
}

const NONE: &str = "<none>";
const UNKNOWN: &str = "<unknown>";

const DESC_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const DESC_CREATED: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const NAME: Column = Column {
    format: "name",
    ..col("Name", "string", DESC_NAME, |o, _| o.name())
};
const AGE: Column = col("Age", "string", DESC_CREATED, |o, now| o.age(now));

/// The apiserver's default table.
pub static DEFAULT: Printer = Printer::new(&[
    NAME,
    col("Created At", "date", DESC_CREATED, |o, _| {
        format::created_at(o).into()
    }),
]);
