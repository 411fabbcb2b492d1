//! A wasi:http component: Spindle serves it on its container port, one instance per
//! request, as `wasmtime serve` does. It answers every GET with a greeting naming the pod
//! that served it, so requests through the Service show the load spread over the pods.
//!
//! - `/`: `<GREETING> from <POD_NAME> (<POD_IP>)`;
//! - `/healthz`: `ok` (the readiness probe);
//! - `/busy?ms=N`: spends N milliseconds (at most 1000) of CPU first, as the php-apache
//!   image of Kubernetes' HPA walkthrough does, so load on the Service shows as CPU use
//!   (`hpa.yaml` scales the Deployment on it).

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Web);

struct Web;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "?".to_owned())
}

/// Spin for the `ms` the query asks (default 100, at most 1000); the time spent.
fn busy(path: &str) -> u64 {
    let ms = path
        .split_once("ms=")
        .and_then(|(_, v)| v.split('&').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100)
        .min(1000);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut x: u64 = 1;
    while std::time::Instant::now() < until {
        for _ in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    }
    std::hint::black_box(x);
    ms
}

impl wasip2::exports::http::incoming_handler::Guest for Web {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (status, body) = match path.split('?').next().unwrap_or("/") {
            "/healthz" => (200, "ok\n".to_owned()),
            "/busy" => (200, format!("busy for {} ms\n", busy(&path))),
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
