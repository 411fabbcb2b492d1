//! The HTTP side of ServiceAccount tokens beyond TokenRequest: TokenReview
//! (authentication.k8s.io/v1, create only: is this token valid, and whose is it?) and
//! OIDC discovery (`/.well-known/openid-configuration`, `/openid/v1/jwks`), so that
//! other systems can verify the cluster's tokens with its public key.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::ConnInfo;
use crate::request::{content_type, decode_body};
use crate::rest::json_response;
use crate::sa_token::{self, ISSUER};
use crate::status::ApiError;
use crate::AppState;

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: the token's user when it is a
/// live token (static or ServiceAccount) for one of `spec.audiences` (the API server's
/// when empty), else `authenticated: false` with the reason, as kube-apiserver answers.
pub(crate) async fn token_review(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let mut review = match decode_body(&content_type(&headers), &body) {
        Ok(b) => b.value,
        Err(e) => return e.into_response(),
    };
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return ApiError::invalid(
            "TokenReview.authentication.k8s.io",
            "authentication.k8s.io",
            "TokenReview",
            "",
            &[spindle_api::validation::FieldError::required("spec.token")],
        )
        .into_response();
    }
    let asked: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let audiences = if asked.is_empty() {
        vec![ISSUER.to_string()]
    } else {
        asked.clone()
    };
    let status = if let Some(u) = crate::auth::static_token(&st, &token) {
        json!({"authenticated": true, "user": {"username": u.name, "groups": u.groups},
               "audiences": audiences})
    } else if crate::sa_legacy::is_legacy(&token) {
        // Legacy tokens name no audience: they are good for the API server's own only.
        match crate::sa_legacy::review(&st, &token).await {
            Ok(c) if audiences.iter().any(|a| a == ISSUER) => {
                let u = sa_token::service_account_user(&c.namespace, &c.account);
                json!({"authenticated": true,
                       "user": {"username": u.name, "uid": c.account_uid, "groups": u.groups},
                       "audiences": [ISSUER]})
            }
            Ok(_) => json!({"authenticated": false, "user": {},
                            "error": "[invalid bearer token, token audiences is invalid for the target audiences]"}),
            Err(e) => json!({"authenticated": false, "user": {},
                             "error": format!("[invalid bearer token, {e}]")}),
        }
    } else {
        match sa_token::review(&st, &token, &audiences).await {
            Ok(c) => {
                let k = &c.kubernetes;
                let u = sa_token::service_account_user(&k.namespace, &k.serviceaccount.name);
                let mut extra = serde_json::Map::new();
                if let Some(p) = &k.pod {
                    extra.insert(
                        "authentication.kubernetes.io/pod-name".into(),
                        json!([p.name]),
                    );
                    extra.insert(
                        "authentication.kubernetes.io/pod-uid".into(),
                        json!([p.uid]),
                    );
                }
                if !c.jti.is_empty() {
                    extra.insert(
                        "authentication.kubernetes.io/credential-id".into(),
                        json!([format!("JTI={}", c.jti)]),
                    );
                }
                let met: Vec<&String> = c.aud.iter().filter(|a| audiences.contains(a)).collect();
                json!({"authenticated": true,
                       "user": {"username": u.name, "uid": k.serviceaccount.uid,
                                "groups": u.groups, "extra": extra},
                       "audiences": met})
            }
            Err(e) => json!({"authenticated": false, "user": {},
                             "error": format!("[invalid bearer token, {e}]")}),
        }
    };
    if let Some(m) = review.as_object_mut() {
        m.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        m.insert("kind".into(), json!("TokenReview"));
        m.entry("metadata").or_insert_with(|| json!({}));
        m.insert("status".into(), status);
    }
    json_response(StatusCode::CREATED, &review, &[])
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(Extension(conn): Extension<ConnInfo>) -> Response {
    let doc = sa_token::Signer::openid_configuration(&conn.local.to_string());
    json_response(StatusCode::OK, &doc, &[])
}

/// `GET /openid/v1/jwks`, served as `application/jwk-set+json` as kube-apiserver does.
pub(crate) async fn jwks(State(st): State<AppState>) -> Response {
    let mut r = json_response(StatusCode::OK, &st.sa_signer.jwks(), &[]);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/jwk-set+json"),
    );
    r
}
