//! The PersistentVolume, PersistentVolumeClaim and StorageClass tables.

use k8s_openapi::api::core;
use k8s_openapi::api::storage as storage_api;
use serde_json::Value;
use spindle_meta::{storage, Quantity};

use super::obj::Obj;
use super::{col, wide, Column, Printer, AGE, DESC_NAME, NAME};

const UNSET: &str = "<unset>";

/// `helper.GetAccessModesAsString`: the short names, in Kubernetes' fixed order.
fn access_modes(o: Obj) -> String {
    let modes = o.0.as_array().map_or(&[][..], Vec::as_slice);
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| modes.iter().any(|m| m == long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// A quantity as `Quantity.String()` prints it; an unset one is "0".
fn quantity(o: Obj) -> String {
    let parsed = match o.0 {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    };
    parsed.map_or_else(|| "0".to_string(), |q| q.to_string())
}

fn class(o: Obj) -> Value {
    storage::class_of(o.0).into()
}

fn phase(o: Obj) -> Value {
    if o.has(&["metadata", "deletionTimestamp"]) {
        return "Terminating".into();
    }
    o.str_(&["status", "phase"]).into()
}

fn or_unset(o: Obj, path: &[&str]) -> Value {
    match o.at(path).0.as_str() {
        Some(s) => s.into(),
        None => UNSET.into(),
    }
}

pub(super) static PERSISTENT_VOLUME: Printer = Printer::new(&[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity", |o, _| {
        quantity(o.at(&["spec", "capacity", "storage"])).into()
    }),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes", |o, _| {
        access_modes(o.at(&["spec", "accessModes"])).into()
    }),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming", |o, _| {
        o.str_(&["spec", "persistentVolumeReclaimPolicy"]).into()
    }),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase", |o, _| phase(o)),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding", |o, _| {
        let r = o.at(&["spec", "claimRef"]);
        if r.0.is_object() {
            format!("{}/{}", r.str_(&["namespace"]), r.str_(&["name"])).into()
        } else {
            "".into()
        }
    }),
    col("StorageClass", "string", "StorageClass of the pv", |o, _| class(o)),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv", |o, _| {
        or_unset(o, &["spec", "volumeAttributesClassName"])
    }),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.", |o, _| {
        o.str_(&["status", "reason"]).into()
    }),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.", |o, _| {
        or_unset(o, &["spec", "volumeMode"])
    }),
]);

pub(super) static PERSISTENT_VOLUME_CLAIM: Printer = Printer::new(&[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim.", |o, _| phase(o)),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim.", |o, _| {
        o.str_(&["spec", "volumeName"]).into()
    }),
    // Capacity and access modes are the bound volume's, shown once the claim names one.
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume.", |o, _| {
        if o.str_(&["spec", "volumeName"]).is_empty() {
            return "".into();
        }
        quantity(o.at(&["status", "capacity", "storage"])).into()
    }),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1", |o, _| {
        if o.str_(&["spec", "volumeName"]).is_empty() {
            return "".into();
        }
        access_modes(o.at(&["status", "accessModes"])).into()
    }),
    col("StorageClass", "string", "StorageClass of the pvc", |o, _| class(o)),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc", |o, _| {
        or_unset(o, &["spec", "volumeAttributesClassName"])
    }),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.", |o, _| {
        or_unset(o, &["spec", "volumeMode"])
    }),
]);

pub(super) static STORAGE_CLASS: Printer = Printer::new(&[
    Column {
        format: "name",
        ..col("Name", "string", DESC_NAME, |o, _| {
            let name = o.str_(&["metadata", "name"]);
            if storage::is_default_class(o.0) {
                format!("{name} (default)").into()
            } else {
                name.into()
            }
        })
    },
    col("Provisioner", "string", "provisioner indicates the type of the provisioner.", |o, _| {
        o.str_(&["provisioner"]).into()
    }),
    col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.", |o, _| {
        match o.str_(&["reclaimPolicy"]) {
            "" => "Delete".into(),
            p => p.into(),
        }
    }),
    col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.", |o, _| {
        match o.str_(&["volumeBindingMode"]) {
            "" => "Immediate".into(),
            m => m.into(),
        }
    }),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand.", |o, _| {
        o.bool_(&["allowVolumeExpansion"]).unwrap_or(false).into()
    }),
    AGE,
]);

printed! {
    core::v1::PersistentVolume => PERSISTENT_VOLUME,
    core::v1::PersistentVolumeClaim => PERSISTENT_VOLUME_CLAIM,
    storage_api::v1::StorageClass => STORAGE_CLASS,
}
