//! The ConfigMap, Secret and ServiceAccount tables.

use k8s_openapi::api::core;

use super::format::non_empty_or;
use super::{col, Printer, AGE, NAME};

// The apiserver declares these counts as "string" yet sends numbers; we declare what the
// cells hold, which kubectl prints identically.
pub(super) static CONFIG_MAP: Printer = Printer::new(&[
    NAME,
    col(
        "Data",
        "integer",
        "Data contains the configuration data.",
        |o, _| (o.map_len(&["data"]) + o.map_len(&["binaryData"])).into(),
    ),
    AGE,
]);

pub(super) static SECRET: Printer = Printer::new(&[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
        |o, _| non_empty_or(o.str_(&["type"]), "Opaque").into(),
    ),
    col(
        "Data",
        "integer",
        "Data contains the secret data.",
        |o, _| o.map_len(&["data"]).into(),
    ),
    AGE,
]);

pub(super) static SERVICE_ACCOUNT: Printer = Printer::new(&[
    NAME,
    col("Secrets", "integer", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", |o, _| {
        o.list(&["secrets"]).len().into()
    }),
    AGE,
]);

printed! {
    core::v1::ConfigMap => CONFIG_MAP,
    core::v1::Secret => SECRET,
    core::v1::ServiceAccount => SERVICE_ACCOUNT,
}
