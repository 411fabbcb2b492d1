//! ReplicationController (core/v1), ReplicaSet's predecessor that kubectl and client test
//! suites still use: the same replica controller ([`crate::replicas`]) serves it, with
//! its selector a plain map of labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};

use spindle_meta::selector;

use crate::replicas::{Counts, ReplicaKind};

impl ReplicaKind for ReplicationController {
    const CONTROLLER: &'static str = "replicationcontroller";
    const COMPONENT: &'static str = "replication-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    /// Every pair must match; an empty selector matches nothing (the API defaults it to
    /// the template's labels, so a stored one is never empty).
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let selector = self.spec.as_ref().and_then(|s| s.selector.as_ref());
        selector::map_selects(selector, Some(labels))
    }

    fn counts(&self) -> Counts {
        let s = self.status.clone().unwrap_or_default();
        Counts {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation,
        }
    }
}
