//! A wasi:http counter that keeps its state in a file: each pod of the StatefulSet has
//! its own claim mounted at /data, so a pod's count survives the pod (delete `counter-1`
//! and the new `counter-1` goes on from where the old one was).
//!
//! - `GET /`: `<POD_NAME>: <count>`;
//! - `POST /`: adds one and answers with the new count;
//! - `/healthz`: `ok` (the readiness probe).
//!
//! Spindle starts one instance per request, so the count is read from the file each
//! time. A StatefulSet pod is one replica: concurrent POSTs to the same pod may race;
//! the write goes to a temporary file and is renamed so a reader never sees half of it.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Counter);

struct Counter;

const FILE: &str = "/data/count";

fn count() -> u64 {
    std::fs::read_to_string(FILE)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn store(n: u64) -> std::io::Result<()> {
    let tmp = format!("{FILE}.tmp");
    std::fs::write(&tmp, format!("{n}\n"))?;
    std::fs::rename(tmp, FILE)
}

fn answer(request: &IncomingRequest) -> (u16, String) {
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "?".to_owned());
    let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    match (request.method(), path.split('?').next().unwrap_or("/")) {
        (_, "/healthz") => (200, "ok\n".to_owned()),
        (Method::Get, "/") => (200, format!("{pod}: {}\n", count())),
        (Method::Post, "/") => {
            let n = count() + 1;
            match store(n) {
                Ok(()) => (200, format!("{pod}: {n}\n")),
                Err(e) => (500, format!("{pod}: cannot store the count: {e}\n")),
            }
        }
        _ => (404, "not found\n".to_owned()),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = answer(&request);
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
