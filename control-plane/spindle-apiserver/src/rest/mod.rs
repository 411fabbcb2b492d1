//! The one generic REST path for every kind in the registry: get, list, watch, create,
//! update, patch (JSON, merge, strategic, apply), delete, deletecollection, and the
//! status, scale, binding, eviction and token subresources. What differs between kinds comes
//! from the kind's strategy (`spindle_api::strategy`) and the admission chain
//! ([`crate::admission`]); this module only routes a request to its verb.
//!
//! - [`storage`]: keys, reads, lists and pages, compare-and-swap writes;
//! - [`handlers`]: the verbs (get, list, create, update, patch, apply);
//! - [`write`]: the pipeline they share (decode checks, defaults, admission, validation);
//! - [`delete`]: deletion, finalizers and garbage collection;
//! - [`scale`], [`binding`], [`eviction`], [`token`]: the subresources.

mod binding;
mod delete;
mod eviction;
mod handlers;
mod scale;
mod storage;
mod token;
mod write;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

pub(crate) use crate::selectors::{selectors, Selectors};
pub(crate) use crate::stored::{encode_for_store, type_meta};
pub(crate) use storage::{decode_stored, list_objects, load, served, stored_core};
pub use storage::{json_response, key, now_rfc3339};

use crate::request::{wants_table, Query, Target};
use crate::status::ApiError;
use crate::{watch, AppState, User};

/// One request on the REST path: what it is about and who sent it.
#[derive(Clone, Copy)]
pub(crate) struct Req<'a> {
    pub st: &'a AppState,
    pub user: &'a User,
    pub t: &'a Target,
    pub q: &'a Query,
    pub headers: &'a HeaderMap,
}

impl<'a> Req<'a> {
    /// The same request about another target (the main resource behind a subresource).
    fn on(self, t: &'a Target) -> Req<'a> {
        Req { t, ..self }
    }
}

/// The entry point for every resource path.
pub async fn handle(
    st: AppState,
    user: User,
    method: Method,
    t: Target,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && t.name.is_none() && t.sub.is_none() && q.flag("watch") {
        return watch::serve(st, t, q, wants_table(&headers)).await;
    }
    let rq = Req {
        st: &st,
        user: &user,
        t: &t,
        q: &q,
        headers: &headers,
    };
    // A subresource the kind does not serve has no route at all: 404, as
    // kube-apiserver's router answers; one it serves answers 405 to other methods.
    if let Some(sub) = t.sub.as_deref() {
        if t.name.is_none() || !t.kind.has_subresource(sub) {
            return ApiError::route_not_found().into_response();
        }
    }
    let res = match (method.as_str(), t.name.is_some(), t.sub.as_deref()) {
        ("GET", false, None) => handlers::list(rq).await,
        ("GET", true, None | Some("status")) => handlers::get(rq).await,
        ("GET", true, Some("scale")) => scale::get(rq).await,
        ("POST", false, None) => handlers::create(rq, &body).await,
        ("GET", true, Some("log")) => crate::proxy::pod_logs(&st, &t, &q).await,
        ("POST", true, Some("binding")) => binding::bind(rq, &body).await,
        ("POST", true, Some("eviction")) => eviction::evict(rq, &body).await,
        ("POST", true, Some("token")) => token::create(rq, &body).await,
        ("PUT", true, None | Some("status")) => handlers::update(rq, &body).await,
        ("PATCH", true, None | Some("status")) => handlers::patch(rq, &body).await,
        ("PUT" | "PATCH", true, Some("scale")) => {
            scale::write(rq, &body, method == Method::PATCH).await
        }
        // A kind's own subresources that read and write the object (a CSR's approval).
        ("GET", true, Some(s)) if t.kind.serves_verb(s, "get") => handlers::get(rq).await,
        ("PUT", true, Some(s)) if t.kind.serves_verb(s, "update") => {
            handlers::update(rq, &body).await
        }
        ("PATCH", true, Some(s)) if t.kind.serves_verb(s, "patch") => {
            handlers::patch(rq, &body).await
        }
        ("DELETE", true, None) => delete::delete(rq, &body).await,
        ("DELETE", false, None) if t.kind.strategy.deletes_collections() => {
            delete::delete_collection(rq, &body).await
        }
        // kube-apiserver's router words every 405 alike, naming no resource.
        _ => Err(ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        )),
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests;
