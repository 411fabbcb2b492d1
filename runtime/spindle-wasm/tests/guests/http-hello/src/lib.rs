//! A wasi:http guest for spindle-wasm's tests and benchmark, on the raw `wasip2` bindings.
//!
//! Routes:
//! - `/trap`: traps (a Rust panic aborts with `unreachable`);
//! - `/alloc`: allocates 1 MiB blocks until memory runs out;
//! - `/spin`: loops forever;
//! - `/work/N`: spins N million iterations, then answers `worked N`;
//! - `/hold/MIB/MS`: allocates and touches MIB MiB, sleeps MS milliseconds, then answers
//!   `held MIB`;
//! - `/env/NAME`: the value of the environment variable NAME (or `unset`);
//! - `/log`: writes `log-stdout` / `log-stderr` lines, then answers `logged`;
//! - `/fetch/HOST:PORT/PATH`: makes an outgoing `GET http://HOST:PORT/PATH` and answers
//!   with the status and body it got;
//! - anything else: `hello from <path>`.
//!
//! It also exports `wasi:cli/run`, so it is a component with both exports: `run` prints
//! `run: hello`; with arguments `connect HOST:PORT` it opens a TCP connection
//! (`wasi:sockets`) and prints `connected`, with `fetch HOST:PORT/PATH` it makes an
//! outgoing HTTP request and prints the status and body; either fails with the error.

use std::io::Write as _;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Hello);
wasip2::cli::command::export!(Hello);

struct Hello;

impl wasip2::exports::cli::run::Guest for Hello {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("connect") {
            let addr = args.get(2).map(String::as_str).unwrap_or("127.0.0.1:1");
            return match std::net::TcpStream::connect(addr) {
                Ok(_) => {
                    println!("connected");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("connect {addr}: {e}");
                    Err(())
                }
            };
        }
        if args.get(1).map(String::as_str) == Some("fetch") {
            let target = args.get(2).map(String::as_str).unwrap_or("127.0.0.1:1/");
            return match fetch(target) {
                Ok((status, body)) => {
                    println!("{status} {body}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("fetch {target}: {e}");
                    Err(())
                }
            };
        }
        println!("run: hello");
        Ok(())
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let path = path_with_query
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let (status, body) = match path.as_str() {
            "/trap" => panic!("trap requested"),
            "/alloc" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "/spin" => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "/log" => {
                println!("log-stdout");
                eprintln!("log-stderr");
                (200, "logged".to_owned())
            }
            p if p.starts_with("/work/") => {
                let n: u64 = p[6..].parse().unwrap_or(1);
                let mut acc = 0u64;
                for i in 0..n * 1_000_000 {
                    acc = std::hint::black_box(acc.wrapping_add(i));
                }
                (200, format!("worked {n} {}", acc % 2))
            }
            p if p.starts_with("/hold/") => {
                let mut parts = p[6..].split('/').map(|n| n.parse::<u64>().unwrap_or(0));
                let (mib, ms) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                let held = std::hint::black_box(vec![1u8; (mib as usize) << 20]);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                (200, format!("held {}", held.len() >> 20))
            }
            p if p.starts_with("/env/") => (
                200,
                std::env::var(&p[5..]).unwrap_or_else(|_| "unset".to_owned()),
            ),
            p if p.starts_with("/fetch/") => match fetch(&p[7..]) {
                Ok((status, body)) => (200, format!("{status} {body}")),
                Err(e) => (502, format!("fetch failed: {e}")),
            },
            p => (200, format!("hello from {p}")),
        };
        respond(response_out, status, body.as_bytes());
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    headers
        .append("content-type", b"text/plain")
        .expect("content-type header");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("status code");
    let outgoing = resp.body().expect("response body");
    ResponseOutparam::set(out, Ok(resp));
    {
        let mut stream = outgoing.write().expect("body stream");
        stream.write_all(body).expect("write body");
        stream.flush().expect("flush body");
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

/// `target` is `HOST:PORT/PATH`.
fn fetch(target: &str) -> Result<(u16, String), String> {
    let (authority, path) = match target.find('/') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    req.set_authority(Some(authority))
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
            Err(e) => return Err(format!("reading response body: {e:?}")),
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
