//! `GET /stats/summary`: the kubelet's Summary API over the node's latest samples
//! ([`crate::stats`]); authorized as `nodes/stats` by the endpoint's gate.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::Agent;

pub async fn summary(State(agent): State<Arc<Agent>>) -> Response {
    Json(crate::stats::summary(&agent)).into_response()
}
