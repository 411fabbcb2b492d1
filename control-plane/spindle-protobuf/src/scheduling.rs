//! `scheduling.k8s.io/v1` messages: PriorityClass.

use k8s_pb::api::scheduling::v1 as scheduling;

use crate::json::{Obj, Res, ToJson};

impl ToJson for scheduling::PriorityClass {
    // value is a plain int32 in Go (always written); globalDefault is omitempty.
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .num("value", Some(self.value.unwrap_or(0)))
            .flag_nz("globalDefault", self.global_default)
            .str("description", &self.description)
            .str("preemptionPolicy", &self.preemption_policy);
        Ok(o.finish())
    }
}
