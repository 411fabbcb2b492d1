//! Authentication, as a layer in front of every API route: client certificates (from the
//! TLS handshake) and bearer tokens (static ones, and ServiceAccount JWTs: `sa_token.rs`). The next layer, authorization, sees the [`User`] this
//! one leaves in the request's extensions.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::status::ApiError;
use crate::AppState;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What the connection (the TLS layer, or the in-process client) knows about a request,
/// carried in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) cert_user: Option<User>,
    /// Set for the in-process client of the controllers and scheduler.
    pub(crate) internal_user: Option<User>,
    pub(crate) local: SocketAddr,
    /// Time a request body has to arrive in full.
    pub(crate) body_read_timeout: Duration,
}

/// The authentication layer: the caller as a [`User`] extension, or 401.
pub(crate) async fn authenticate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let conn = req.extensions().get::<ConnInfo>();
    let user = match conn.and_then(|c| c.internal_user.clone()) {
        Some(u) => Some(u),
        None => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            identify(&st, conn.and_then(|c| c.cert_user.clone()), bearer).await
        }
    };
    match user {
        Some(mut u) => {
            // As kube-apiserver's authenticator does for every authenticated user.
            if !u.groups.iter().any(|g| g == crate::authz::AUTHENTICATED) {
                u.groups.push(crate::authz::AUTHENTICATED.into());
            }
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

/// A bearer token wins over the client certificate; a token that matches nothing is
/// refused even when a certificate came along. Tokens are the static ones, then
/// ServiceAccount JWTs.
async fn identify(st: &AppState, cert_user: Option<User>, auth: Option<String>) -> Option<User> {
    if let Some(auth) = auth {
        let tok = auth.strip_prefix("Bearer ")?.trim();
        return match static_token(st, tok) {
            Some(u) => Some(u),
            None => crate::sa_token::authenticate(st, tok).await,
        };
    }
    cert_user
}

/// The user of one of the server's static tokens.
pub(crate) fn static_token(st: &AppState, tok: &str) -> Option<User> {
    st.tokens
        .iter()
        .find(|(t, _)| constant_time_eq(t.as_bytes(), tok.as_bytes()))
        .map(|(_, u)| u.clone())
}

/// Equal bytes, compared in time independent of where they differ (for secrets).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a verified client certificate names: CN is the user, each O a group.
pub(crate) fn cert_user(
    conn: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<User> {
    let certs = conn.get_ref().1.peer_certificates()?;
    let (name, groups) = spindle_meta::tls::client_certs::subject(certs.first()?.as_ref())?;
    Some(User { name, groups })
}
