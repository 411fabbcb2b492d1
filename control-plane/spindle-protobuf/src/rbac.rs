//! `rbac.authorization.k8s.io/v1` kinds, which `kubectl create
//! role|clusterrole|rolebinding|clusterrolebinding` also send as protobuf.

use k8s_pb::api::rbac::v1 as rbac;

use crate::json::{Obj, Res, ToJson};

impl ToJson for rbac::Role {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msgs("rules", &self.rules)?;
        Ok(o.finish())
    }
}

impl ToJson for rbac::ClusterRole {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msgs("rules", &self.rules)?
            .msg("aggregationRule", &self.aggregation_rule)?;
        Ok(o.finish())
    }
}

impl ToJson for rbac::AggregationRule {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("clusterRoleSelectors", &self.cluster_role_selectors)?;
        Ok(o.finish())
    }
}

impl ToJson for rbac::PolicyRule {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        // `verbs` has no omitempty in the Go type.
        o.set("verbs", serde_json::Value::Array(Vec::new()))
            .strs("verbs", &self.verbs)
            .strs("apiGroups", &self.api_groups)
            .strs("resources", &self.resources)
            .strs("resourceNames", &self.resource_names)
            .strs("nonResourceURLs", &self.non_resource_ur_ls);
        Ok(o.finish())
    }
}

impl ToJson for rbac::RoleBinding {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msgs("subjects", &self.subjects)?
            .msg("roleRef", &self.role_ref)?;
        Ok(o.finish())
    }
}

impl ToJson for rbac::ClusterRoleBinding {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msgs("subjects", &self.subjects)?
            .msg("roleRef", &self.role_ref)?;
        Ok(o.finish())
    }
}

impl ToJson for rbac::Subject {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("kind", &self.kind)
            .str("apiGroup", &self.api_group)
            .str_req("name", &self.name)
            .str("namespace", &self.namespace);
        Ok(o.finish())
    }
}

impl ToJson for rbac::RoleRef {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("apiGroup", &self.api_group)
            .str_req("kind", &self.kind)
            .str_req("name", &self.name);
        Ok(o.finish())
    }
}
