//! The HTTP pipeline: an axum [`Router`] with tower layers.
//!
//! ```text
//! /healthz /livez /readyz /cacerts      public (agents fetch /cacerts before they trust us)
//! everything else → authentication → authorization → metrics → body limit → discovery,
//!                   OpenAPI, /metrics, or a resource path
//! ```
//!
//! Authorization ([`authz`]: impersonation, then RBAC) is the layer after
//! authentication; it finds the caller as the [`User`] extension.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tower::ServiceExt;

use crate::auth::{authenticate, ConnInfo, User};
use crate::request::{parse_path, Query};
use crate::status::ApiError;
use crate::{
    authz, discovery, metrics, metrics_api, node_proxy, proxy, rest, sa_endpoints, stored, AppState,
};

/// Largest request body accepted (kube-apiserver's MaxRequestBodyBytes, 3 MiB).
const MAX_BODY: usize = stored::MAX_OBJECT_BYTES;

/// The whole pipeline, for the TLS connections and the in-process client alike. Each
/// request carries its connection's [`ConnInfo`] as an extension.
pub(crate) fn router(st: AppState) -> Router {
    let api = api(st.clone());
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/cacerts", get(cacerts))
        // Other methods on the public paths are API requests like any other (and so
        // authenticated), as before the router existed.
        .method_not_allowed_fallback(forward)
        .fallback_service(api.clone())
        .with_state((st, api))
}

/// Everything behind authentication.
fn api(st: AppState) -> Router {
    let discovery = Router::new()
        .route("/version", any(version))
        .route("/api", any(core_versions))
        .route("/apis", any(groups))
        .route("/api/{version}", any(core_group_version))
        .route("/apis/{group}", any(group))
        .route("/apis/{group}/{version}", any(group_version))
        .route("/openapi/v2", any(openapi_v2))
        .route("/openapi/v3", any(openapi_v3))
        .route("/openapi/v3/{*path}", any(openapi_v3))
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            any(sa_endpoints::token_review),
        )
        .route(
            "/.well-known/openid-configuration",
            get(sa_endpoints::openid_configuration),
        )
        .route("/openid/v1/jwks", get(sa_endpoints::jwks))
        .route("/metrics", get(metrics::serve));
    // Discovery paths answer with or without a trailing slash.
    let slashed = Router::new()
        .route("/version/", any(version))
        .route("/api/", any(core_versions))
        .route("/apis/", any(groups))
        .route("/api/{version}/", any(core_group_version))
        .route("/apis/{group}/", any(group))
        .route("/apis/{group}/{version}/", any(group_version))
        .route("/openapi/v2/", any(openapi_v2))
        .route("/openapi/v3/", any(openapi_v3));
    discovery
        .merge(slashed)
        .fallback(resource)
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::from_fn_with_state(
            st.clone(),
            metrics::instrument,
        ))
        // Authorization (and impersonation), inside authentication.
        .layer(middleware::from_fn_with_state(st.clone(), authz::authorize))
        .layer(middleware::from_fn_with_state(st.clone(), authenticate))
        .with_state(st)
}

async fn ok() -> Response {
    (StatusCode::OK, "ok").into_response()
}

/// Public by design (as in k3s): agents verify it against the hash in their token.
async fn cacerts(State((st, _)): State<(AppState, Router)>) -> Response {
    (StatusCode::OK, st.ca_pem.to_string()).into_response()
}

async fn forward(State((_, api)): State<(AppState, Router)>, req: Request) -> Response {
    let Ok(resp) = api.oneshot(req).await;
    resp
}

/// Request bodies are limited to [`MAX_BODY`] for every route; reading past it fails,
/// and the resource handler answers 413.
async fn limit_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, MAX_BODY));
    next.run(Request::from_parts(parts, body)).await
}

async fn version() -> Response {
    discovery::version()
}

async fn core_versions(
    State(st): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    discovery::api(&st, &headers, &conn.local.to_string())
}

async fn groups(State(st): State<AppState>, headers: HeaderMap) -> Response {
    discovery::apis(&st, &headers)
}

async fn core_group_version(State(st): State<AppState>, Path(v): Path<String>) -> Response {
    discovery::group_version(&st, "", &v)
}

async fn group(State(st): State<AppState>, Path(g): Path<String>) -> Response {
    discovery::group(&st, &g)
}

async fn group_version(
    State(st): State<AppState>,
    Path((g, v)): Path<(String, String)>,
) -> Response {
    discovery::group_version(&st, &g, &v)
}

async fn openapi_v2(State(st): State<AppState>, headers: HeaderMap) -> Response {
    discovery::openapi_v2(&st, &headers)
}

async fn openapi_v3(State(st): State<AppState>, req: Request) -> Response {
    discovery::openapi_v3(&st, req.uri().path().trim_end_matches('/'))
}

/// Every other path: a resource of the registry, or 404.
async fn resource(
    State(st): State<AppState>,
    Extension(user): Extension<User>,
    conn: Option<Extension<ConnInfo>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    if let Some(review) = authz::reviews::route(&path) {
        return review_request(&st, &user, &review, conn, req).await;
    }
    if let Some((node, sub)) = node_proxy::route(&path) {
        return node_proxy::forward(&st, req.method(), &node, &sub, req.uri().query())
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    if let Some(m) = metrics_api::route(&path) {
        let q = Query::parse(req.uri().query());
        return metrics_api::serve(&st, req.method(), m, &q)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let target = match parse_path(&st.reg, &path) {
        Ok(Some(t)) => t,
        Ok(None) => return ApiError::path_not_found().into_response(),
        Err(e) => return e.into_response(),
    };
    // Upgraded streams (exec, attach, port-forward) keep the request itself: the
    // connection is taken over once the agent has switched protocols.
    let streaming = target
        .sub
        .as_deref()
        .is_some_and(|s| target.kind.connects(s))
        && target.name.is_some()
        && matches!(*req.method(), Method::GET | Method::POST);
    if streaming {
        return proxy::upgrade(&st, &target, req)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let timeout = conn.map_or(crate::ConnLimits::default().body_read_timeout, |c| {
        c.0.body_read_timeout
    });
    let (parts, body) = req.into_parts();
    let body = match read_body(body, timeout, parts.version).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    let q = Query::parse(parts.uri.query());
    rest::handle(st, user, parts.method, target, q, parts.headers, body).await
}

/// An access review or SelfSubjectReview: POST only, answered without storing anything.
async fn review_request(
    st: &AppState,
    user: &User,
    review: &authz::reviews::ReviewPath,
    conn: Option<Extension<ConnInfo>>,
    req: Request,
) -> Response {
    if req.method() != Method::POST {
        return ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let timeout = conn.map_or(crate::ConnLimits::default().body_read_timeout, |c| {
        c.0.body_read_timeout
    });
    let (parts, body) = req.into_parts();
    let body = match read_body(body, timeout, parts.version).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    let ct = crate::request::content_type(&parts.headers);
    let decoded = if body.is_empty() {
        Ok(serde_json::json!({}))
    } else {
        crate::request::decode_body(&ct, &body).map(|b| b.value)
    };
    decoded
        .and_then(|v| authz::reviews::handle(st, user, review, &v))
        .unwrap_or_else(IntoResponse::into_response)
}

/// The request body, within `timeout`: a client trickling a body would otherwise hold its
/// request (and connection) open for as long as it likes.
async fn read_body(
    body: Body,
    timeout: Duration,
    version: axum::http::Version,
) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, usize::MAX)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::too_large(format_args!("limit is {MAX_BODY}")).into_response()),
        Err(_) => {
            // kube-apiserver's timeout filter answers this way when a request, its body
            // included, takes longer than --request-timeout. The rest of the body is not
            // read, so an HTTP/1.1 connection cannot be reused (HTTP/2 resets the stream).
            let mut resp = ApiError::new(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline exceeded",
            )
            .into_response();
            if version < axum::http::Version::HTTP_2 {
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            Err(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use spindle_api::openapi::OpenApi;
    use spindle_api::Registry;
    use spindle_store::{SledStore, SledStoreOptions};

    use super::*;
    use crate::{alloc, watch};

    fn state(dir: &std::path::Path) -> AppState {
        let reg = Registry::new();
        let openapi = OpenApi::new(&reg);
        let store = SledStore::open(dir, SledStoreOptions::default()).expect("store");
        let node = User {
            name: "node".into(),
            groups: vec!["system:masters".into()],
        };
        AppState {
            reg: Arc::new(reg),
            store: Arc::new(store),
            openapi: Arc::new(openapi),
            tokens: Arc::new(vec![("secret".into(), node)]),
            sa_signer: Arc::new(crate::sa_token::Signer::generate().expect("signer")),
            ca_pem: Arc::from("PEM"),
            default_toleration_seconds: 300,
            event_cache: Arc::new(watch::EventCache::default()),
            kubelet_client: None,
            net: alloc::NetRanges::default(),
            authz: Arc::default(),
        }
    }

    /// A request as it comes off a TLS connection without a client certificate.
    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body)).expect("request");
        req.extensions_mut().insert(ConnInfo {
            cert_user: None,
            internal_user: None,
            local: SocketAddr::from(([127, 0, 0, 1], 6443)),
            body_read_timeout: Duration::from_secs(5),
        });
        let Ok(resp) = app.clone().oneshot(req).await;
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn public_paths_answer_anyone_and_the_rest_needs_a_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(state(dir.path()));
        assert_eq!(
            call(&app, "GET", "/healthz", None, vec![]).await,
            (200, "ok".into())
        );
        assert_eq!(
            call(&app, "GET", "/cacerts", None, vec![]).await,
            (200, "PEM".into())
        );
        for (method, path) in [
            ("GET", "/version"),
            ("POST", "/healthz"),
            ("GET", "/api/v1/pods"),
            ("GET", "/nowhere"),
        ] {
            let (code, body) = call(&app, method, path, None, vec![]).await;
            assert_eq!(code, 401, "{method} {path}");
            assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
        }
        assert_eq!(
            call(&app, "GET", "/version", Some("wrong"), vec![]).await.0,
            401
        );
        let (code, body) = call(&app, "GET", "/version", Some("secret"), vec![]).await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""major":"1""#), "{body}");
        // Other methods on a public path are API requests, which find no resource there.
        assert_eq!(
            call(&app, "POST", "/healthz", Some("secret"), vec![])
                .await
                .0,
            404
        );
    }

    #[tokio::test]
    async fn discovery_and_resources_route_behind_authentication() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(state(dir.path()));
        for path in [
            "/api",
            "/api/",
            "/apis",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1/",
            "/openapi/v3",
            "/openapi/v3/apis/apps/v1",
        ] {
            assert_eq!(
                call(&app, "GET", path, Some("secret"), vec![]).await.0,
                200,
                "{path}"
            );
        }
        let (code, body) = call(
            &app,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            Some("secret"),
            vec![],
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""kind":"ConfigMapList""#), "{body}");
        assert_eq!(
            call(&app, "GET", "/apis/nope/v1", Some("secret"), vec![])
                .await
                .0,
            404
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_a_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(state(dir.path()));
        let (code, body) = call(
            &app,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("secret"),
            vec![b' '; MAX_BODY + 1],
        )
        .await;
        assert_eq!(code, 413);
        assert!(
            body.contains(r#""reason":"RequestEntityTooLarge""#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn requests_are_counted_on_the_metrics_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(state(dir.path()));
        crate::metrics::register();
        let list = "/api/v1/namespaces/default/configmaps";
        assert_eq!(call(&app, "GET", list, Some("secret"), vec![]).await.0, 200);
        assert_eq!(call(&app, "GET", "/metrics", None, vec![]).await.0, 401);
        let (code, body) = call(&app, "GET", "/metrics", Some("secret"), vec![]).await;
        assert_eq!(code, 200);
        let counted = r#"apiserver_request_total{verb="LIST",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="namespace",component="apiserver",code="200"} "#;
        assert!(body.contains(counted), "{body}");
        assert!(
            body.contains("# TYPE apiserver_request_duration_seconds histogram"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn the_in_process_client_goes_through_the_same_router() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = state(dir.path()).in_process_client("system:test", &["system:masters"]);
        let v = client.apiserver_version().await.expect("version");
        assert_eq!(v.major, "1");
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "default");
        assert!(cms
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty());
    }
}
