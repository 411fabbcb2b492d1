//! Kinds with no rules of their own (Endpoints, Event, Lease, EndpointSlice):
//! metadata validation and nothing else.

use super::Strategy;

pub struct Plain;

impl Strategy for Plain {}
