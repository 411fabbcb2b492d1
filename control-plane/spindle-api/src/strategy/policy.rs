//! PodDisruptionBudgets.

use serde_json::Value;

use super::{empty_status, Strategy};
use crate::validation::{validate_disruption_budget, FieldError};

pub struct PodDisruptionBudgets;

impl Strategy for PodDisruptionBudgets {
    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_disruption_budget(obj, errs);
    }

    // The eviction subresource trusts status.observedGeneration to know whether the
    // disruption controller has seen the current spec.
    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut serde_json::Map<String, Value>) {
        empty_status(obj);
    }
}
