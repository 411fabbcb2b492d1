//! The access reviews (authorization.k8s.io/v1) and SelfSubjectReview
//! (authentication.k8s.io), which `kubectl auth can-i` and `auth whoami` send as
//! protobuf. Only the spec travels on create; a status sent along is dropped.

use k8s_pb::api::authentication::{v1 as authn, v1beta1 as authn_beta};
use k8s_pb::api::authorization::v1 as authz;

use crate::json::{Obj, Res, ToJson};

impl ToJson for authz::ResourceAttributes {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("namespace", &self.namespace)
            .str("verb", &self.verb)
            .str("group", &self.group)
            .str("version", &self.version)
            .str("resource", &self.resource)
            .str("subresource", &self.subresource)
            .str("name", &self.name);
        Ok(o.finish())
    }
}

impl ToJson for authz::NonResourceAttributes {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("path", &self.path).str("verb", &self.verb);
        Ok(o.finish())
    }
}

impl ToJson for authz::SelfSubjectAccessReviewSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("resourceAttributes", &self.resource_attributes)?
            .msg("nonResourceAttributes", &self.non_resource_attributes)?;
        Ok(o.finish())
    }
}

impl ToJson for authz::SubjectAccessReviewSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("resourceAttributes", &self.resource_attributes)?
            .msg("nonResourceAttributes", &self.non_resource_attributes)?
            .str("user", &self.user)
            .strs("groups", &self.groups)
            .str("uid", &self.uid);
        Ok(o.finish())
    }
}

impl ToJson for authz::SelfSubjectRulesReviewSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("namespace", &self.namespace);
        Ok(o.finish())
    }
}

impl ToJson for authz::SelfSubjectAccessReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for authz::SubjectAccessReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for authz::LocalSubjectAccessReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for authz::SelfSubjectRulesReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for authn::SelfSubjectReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?;
        Ok(o.finish())
    }
}

impl ToJson for authn_beta::SelfSubjectReview {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?;
        Ok(o.finish())
    }
}
