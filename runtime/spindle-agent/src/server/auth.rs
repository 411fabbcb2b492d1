//! Authentication of the endpoint's callers, as a tower layer in front of every route
//! (unknown paths included, so a stranger learns nothing of the routes). It says who
//! called by putting a [`Caller`] in the request's extensions; authorization, when it
//! comes (the kubelet asks the API server with a SubjectAccessReview per request), is
//! one more layer that reads it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use super::text;

/// Who made the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The API server, which proves itself with the cluster's token secret.
    ApiServer,
}

/// `routes`, answering 401 to a request that does not carry the cluster's token
/// `secret` as its bearer token.
pub fn authenticated(routes: Router, secret: &str) -> Router {
    let secret: Arc<str> = Arc::from(secret);
    routes.layer(middleware::from_fn_with_state(secret, authenticate))
}

async fn authenticate(State(secret): State<Arc<str>>, mut req: Request, next: Next) -> Response {
    if !bearer_matches(&secret, &req) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    req.extensions_mut().insert(Caller::ApiServer);
    next.run(req).await
}

/// Whether `req` carries `secret` as its bearer token, compared in constant time.
fn bearer_matches(secret: &str, req: &Request) -> bool {
    let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = v.strip_prefix("Bearer ") else {
        return false;
    };
    let secret = secret.as_bytes();
    // The full join token carries the secret after the last ':'.
    let given = token.rsplit(':').next().unwrap_or(token).as_bytes();
    !secret.is_empty()
        && given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Extension;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(secret: &str) -> Router {
        let routes = Router::new()
            .route(
                "/whoami",
                get(|Extension(c): Extension<Caller>| async move { format!("{c:?}") }),
            )
            .fallback(|| async { text(StatusCode::NOT_FOUND, "not found") });
        authenticated(routes, secret)
    }

    async fn call(app: Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = app
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_token_secret_admits_the_api_server() {
        let ok = (StatusCode::OK, "ApiServer".to_string());
        assert_eq!(
            call(app("s3cret"), "/whoami", Some("Bearer s3cret")).await,
            ok
        );
        // The whole join token (`K10<ca hash>::server:<secret>`) is accepted too.
        let join = "Bearer K10abc::server:s3cret";
        assert_eq!(call(app("s3cret"), "/whoami", Some(join)).await, ok);
    }

    #[tokio::test]
    async fn everything_else_is_unauthorized_even_unknown_paths() {
        let denied = (StatusCode::UNAUTHORIZED, "Unauthorized".to_string());
        for auth in [
            None,
            Some("Bearer wrong!"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
            Some("Bearer "),
        ] {
            assert_eq!(
                call(app("s3cret"), "/whoami", auth).await,
                denied,
                "{auth:?}"
            );
            assert_eq!(call(app("s3cret"), "/nope", auth).await, denied, "{auth:?}");
        }
        // No secret configured: nobody gets in, not even with an empty token.
        assert_eq!(call(app(""), "/whoami", Some("Bearer ")).await, denied);
        let found = call(app("s3cret"), "/nope", Some("Bearer s3cret")).await;
        assert_eq!(found.0, StatusCode::NOT_FOUND);
    }
}
