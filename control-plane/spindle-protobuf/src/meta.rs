//! `meta.k8s.io/v1` messages shared by every kind.

use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::Value;

use crate::json::{Obj, Res, ToJson};
use crate::DecodeError;

impl ToJson for meta::ObjectMeta {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("name", &self.name)
            .str("generateName", &self.generate_name)
            .str("namespace", &self.namespace)
            .str("selfLink", &self.self_link)
            .str("uid", &self.uid)
            .str("resourceVersion", &self.resource_version)
            .num_nz("generation", self.generation);
        o.time("creationTimestamp", &self.creation_timestamp)?
            .time("deletionTimestamp", &self.deletion_timestamp)?;
        o.num(
            "deletionGracePeriodSeconds",
            self.deletion_grace_period_seconds,
        )
        .str_map("labels", &self.labels)
        .str_map("annotations", &self.annotations)
        .msgs("ownerReferences", &self.owner_references)?
        .strs("finalizers", &self.finalizers)
        .msgs("managedFields", &self.managed_fields)?;
        Ok(o.finish())
    }
}

impl ToJson for meta::OwnerReference {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("apiVersion", &self.api_version)
            .str_req("kind", &self.kind)
            .str_req("name", &self.name)
            .str_req("uid", &self.uid)
            .flag("controller", self.controller)
            .flag("blockOwnerDeletion", self.block_owner_deletion);
        Ok(o.finish())
    }
}

impl ToJson for meta::ManagedFieldsEntry {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("manager", &self.manager)
            .str("operation", &self.operation)
            .str("apiVersion", &self.api_version);
        o.time("time", &self.time)?;
        o.str("fieldsType", &self.fields_type)
            .msg("fieldsV1", &self.fields_v1)?
            .str("subresource", &self.subresource);
        Ok(o.finish())
    }
}

impl ToJson for meta::FieldsV1 {
    /// `FieldsV1.raw` already holds the JSON document the API shows inline.
    fn to_json(&self) -> Res {
        match self.raw.as_deref() {
            None | Some([]) => Ok(Value::Object(Default::default())),
            Some(raw) => serde_json::from_slice(raw).map_err(|e| DecodeError::InvalidField {
                field: "fieldsV1".to_owned(),
                reason: format!("raw is not JSON: {e}"),
            }),
        }
    }
}

impl ToJson for meta::LabelSelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_map("matchLabels", &self.match_labels)
            .msgs("matchExpressions", &self.match_expressions)?;
        Ok(o.finish())
    }
}

impl ToJson for meta::LabelSelectorRequirement {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("key", &self.key)
            .str_req("operator", &self.operator)
            .strs("values", &self.values);
        Ok(o.finish())
    }
}

impl ToJson for meta::DeleteOptions {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("gracePeriodSeconds", self.grace_period_seconds)
            .msg("preconditions", &self.preconditions)?
            .flag("orphanDependents", self.orphan_dependents)
            .str_req("propagationPolicy", &self.propagation_policy)
            .strs("dryRun", &self.dry_run)
            .flag(
                "ignoreStoreReadErrorWithClusterBreakingPotential",
                self.ignore_store_read_error_with_cluster_breaking_potential,
            );
        Ok(o.finish())
    }
}

impl ToJson for meta::Preconditions {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("uid", &self.uid)
            .str_req("resourceVersion", &self.resource_version);
        Ok(o.finish())
    }
}
