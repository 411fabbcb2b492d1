//! Authentication, as a layer in front of every API route: client certificates (from the
//! TLS handshake) and bearer tokens. The next layer, authorization, sees the [`User`] this
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
        None => identify(&st, conn.and_then(|c| c.cert_user.clone()), &req),
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
/// refused even when a certificate came along.
fn identify(st: &AppState, cert_user: Option<User>, req: &Request) -> Option<User> {
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let tok = auth.strip_prefix("Bearer ")?.trim();
        return st
            .tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), tok.as_bytes()))
            .map(|(_, u)| u.clone());
    }
    cert_user
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a verified client certificate names: CN is the user, each O a group.
pub(crate) fn cert_user(
    conn: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<User> {
    let certs = conn.get_ref().1.peer_certificates()?;
    let der = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}
