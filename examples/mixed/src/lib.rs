//! The Wasm half of a mixed pod: a wasi:http component in the same pod as a container
//! sidecar (busybox httpd) that serves files on localhost:8000. For `GET /<file>` it
//! fetches `http://127.0.0.1:8000/<file>` from the sidecar over the pod's loopback and
//! answers with the file and its word count, naming the pod that served it.
//!
//! - `/healthz`: `ok` (the readiness probe);
//! - anything else: the sidecar's file, or the sidecar's status if it has none.

use std::io::Write as _;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Mixed);

struct Mixed;

/// Where the sidecar listens (the container's port, on the pod's localhost).
const SIDECAR: &str = "127.0.0.1:8000";

/// GET `path` from the sidecar: (status, body).
fn fetch(path: &str) -> Result<(u16, String), String> {
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    req.set_authority(Some(SIDECAR))
        .map_err(|()| "bad authority")?;
    req.set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let body = req.body().map_err(|()| "request body")?;
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let resp = loop {
        match future.get() {
            Some(r) => break r,
            None => future.subscribe().block(),
        }
    };
    let resp = resp
        .map_err(|()| "response taken twice".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let incoming = resp.consume().map_err(|()| "response body")?;
    let stream = incoming.stream().map_err(|()| "response stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the sidecar's answer: {e:?}")),
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn pod() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| "?".to_owned())
}

impl wasip2::exports::http::incoming_handler::Guest for Mixed {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let path = path.split('?').next().unwrap_or("/").to_owned();
        let (status, body) = if path == "/healthz" {
            (200, "ok\n".to_owned())
        } else {
            match fetch(&path) {
                Ok((200, text)) => (
                    200,
                    format!(
                        "{path} from the files sidecar of {} ({} words):\n{text}",
                        pod(),
                        text.split_whitespace().count()
                    ),
                ),
                Ok((code, _)) => (code, format!("the files sidecar answered {code} for {path}\n")),
                Err(e) => (502, format!("the files sidecar did not answer: {e}\n")),
            }
        };
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain");
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(status);
        let Ok(outgoing) = resp.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(resp));
        if let Ok(mut stream) = outgoing.write() {
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
