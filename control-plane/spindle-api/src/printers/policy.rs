//! The PodDisruptionBudget table.

use k8s_openapi::api::policy;

use super::format::int_or_string;
use super::{col, Printer, AGE, NAME};

pub(super) static POD_DISRUPTION_BUDGET: Printer = Printer::new(&[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
        |o, _| int_or_string(o.at(&["spec", "minAvailable"])).into(),
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
        |o, _| int_or_string(o.at(&["spec", "maxUnavailable"])).into(),
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
        |o, _| o.int(&["status", "disruptionsAllowed"]).into(),
    ),
    AGE,
]);

printed! {
    policy::v1::PodDisruptionBudget => POD_DISRUPTION_BUDGET,
}
