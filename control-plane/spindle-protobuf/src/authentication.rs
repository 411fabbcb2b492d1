//! `authentication.k8s.io/v1` TokenRequest, which `kubectl create token` sends as
//! protobuf (client-go's typed ServiceAccounts client).

use k8s_pb::api::authentication::v1 as authn;

use crate::json::{Obj, Res, ToJson};

impl ToJson for authn::TokenRequest {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for authn::TokenRequestSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.strs("audiences", &self.audiences)
            .num("expirationSeconds", self.expiration_seconds)
            .msg("boundObjectRef", &self.bound_object_ref)?;
        Ok(o.finish())
    }
}

impl ToJson for authn::BoundObjectReference {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("kind", &self.kind)
            .str("apiVersion", &self.api_version)
            .str("name", &self.name)
            .str("uid", &self.u_id);
        Ok(o.finish())
    }
}
