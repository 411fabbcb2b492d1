//! The PriorityClass table (`printPriorityClass`).

use k8s_openapi::api::scheduling;

use super::{col, Printer, AGE, NAME};

pub(super) static PRIORITY_CLASS: Printer = Printer::new(&[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
        |o, _| o.int(&["value"]).into(),
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
        |o, _| o.bool_(&["globalDefault"]).unwrap_or(false).into(),
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
        |o, _| o.str_(&["preemptionPolicy"]).into(),
    ),
]);

printed! {
    scheduling::v1::PriorityClass => PRIORITY_CLASS,
}
