//! A wasi:http component: Spindle serves it on its container port, one instance per
//! request, as `wasmtime serve` does. It answers every GET with a greeting naming the pod
//! that served it, so requests through the Service show the load spread over the pods.
//!
//! - `/`: `<GREETING> from <POD_NAME> (<POD_IP>)`;
//! - `/healthz`: `ok` (the readiness probe).

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Web);

struct Web;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "?".to_owned())
}

impl wasip2::exports::http::incoming_handler::Guest for Web {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (status, body) = match path.split('?').next().unwrap_or("/") {
            "/healthz" => (200, "ok\n".to_owned()),
            "/" => (
                200,
                format!(
                    "{} from {} ({})\n",
                    var("GREETING"),
                    var("POD_NAME"),
                    var("POD_IP")
                ),
            ),
            _ => (404, "not found\n".to_owned()),
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
