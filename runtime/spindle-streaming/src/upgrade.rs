//! Choosing the protocol of a streaming request: WebSocket (with one of our
//! subprotocols in `Sec-WebSocket-Protocol`) or SPDY/3.1 (with one of our
//! `X-Stream-Protocol-Version` values), as the kubelet's `httpstream` negotiation does.

use hyper::header::{self, HeaderValue};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{HeaderMap, Request, Response, StatusCode};

/// The two transports kubectl may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Spdy,
}

/// An upgrade agreed with the client: answer with [`Negotiated::response`], then take
/// the connection with [`Negotiated::upgraded`] once hyper has sent that answer.
#[derive(Debug)]
pub struct Negotiated {
    pub transport: Transport,
    /// The subprotocol (WebSocket) or stream protocol version (SPDY) chosen.
    pub protocol: String,
    /// `Sec-WebSocket-Accept` (WebSocket only).
    accept: Option<String>,
    on: OnUpgrade,
}

/// Values of a header that may be repeated and comma-separated.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first of `ours` (in our order of preference) that the client offers.
fn pick(ours: &[&str], offered: &[String], what: &str) -> Result<String, String> {
    ours.iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .map(|p| p.to_string())
        .ok_or_else(|| format!("none of the {what} protocols {offered:?} is supported"))
}

/// Picks the upgrade the client offers with one of `ws` (WebSocket subprotocols, in our
/// order of preference) or `spdy` (X-Stream-Protocol-Version values). The error is a
/// message for a 400 answer.
pub fn negotiate<B>(
    req: &mut Request<B>,
    ws: &[&str],
    spdy: &[&str],
) -> Result<Negotiated, String> {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (transport, protocol, accept) = if upgrade == "websocket" {
        let offered = header_values(headers, "sec-websocket-protocol");
        let protocol = pick(ws, &offered, "WebSocket")?;
        let key = headers
            .get("sec-websocket-key")
            .ok_or("missing Sec-WebSocket-Key")?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        (Transport::WebSocket, protocol, Some(accept))
    } else if upgrade.starts_with("spdy/3.1") {
        let offered = header_values(headers, "x-stream-protocol-version");
        (Transport::Spdy, pick(spdy, &offered, "stream")?, None)
    } else {
        return Err("the request must upgrade to websocket or SPDY/3.1".into());
    };
    Ok(Negotiated {
        transport,
        protocol,
        accept,
        on: hyper::upgrade::on(req),
    })
}

impl Negotiated {
    /// The `101 Switching Protocols` answer.
    pub fn response<B: Default>(&self) -> Response<B> {
        let mut r = Response::new(B::default());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let pairs: Vec<(&str, &str)> = match (&self.transport, &self.accept) {
            (Transport::WebSocket, accept) => vec![
                ("upgrade", "websocket"),
                (
                    "sec-websocket-accept",
                    accept.as_deref().unwrap_or_default(),
                ),
                ("sec-websocket-protocol", &self.protocol),
            ],
            (Transport::Spdy, _) => vec![
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", &self.protocol),
            ],
        };
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        }
        r
    }

    /// The connection, once the answer is sent; `None` if the client went away first.
    pub async fn upgraded(self) -> Option<Upgraded> {
        self.on.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/exec/ns/pod/c");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn websocket_takes_our_preferred_protocol_among_the_offered() {
        let mut req = request(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "sec-websocket-protocol",
                "v4.channel.k8s.io, v5.channel.k8s.io",
            ),
        ]);
        let n = negotiate(
            &mut req,
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
            &["v4.channel.k8s.io"],
        )
        .expect("negotiated");
        assert_eq!(n.transport, Transport::WebSocket);
        assert_eq!(n.protocol, "v5.channel.k8s.io");
        let r: Response<()> = n.response();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455's own example key and answer.
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    }

    #[test]
    fn spdy_reads_repeated_version_headers() {
        let mut req = request(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v2.channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        let n = negotiate(&mut req, &[], &["v4.channel.k8s.io"]).expect("negotiated");
        assert_eq!(n.transport, Transport::Spdy);
        let r: Response<()> = n.response();
        assert_eq!(r.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(
            r.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
    }

    #[test]
    fn unknown_protocols_and_plain_requests_are_refused() {
        let mut req = request(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v1.channel.k8s.io"),
        ]);
        let e = negotiate(&mut req, &[], &["v4.channel.k8s.io"]).expect_err("refused");
        assert!(e.contains("v1.channel.k8s.io"), "{e}");
        let mut req = request(&[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]);
        let e = negotiate(&mut req, &["v5.channel.k8s.io"], &[]).expect_err("no key");
        assert_eq!(e, "missing Sec-WebSocket-Key");
        let mut req = request(&[]);
        assert!(negotiate(&mut req, &["v5.channel.k8s.io"], &["v4.channel.k8s.io"]).is_err());
    }
}
