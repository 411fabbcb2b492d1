//! Serving the http-hello guest and talking to it.

use std::net::{SocketAddr, TcpListener};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use spindle_wasm::{HttpServer, InstanceSpec, Program, WasmRuntime};

use super::{guest, spec, write_wasm, Outputs};

pub async fn load_http_hello(rt: &WasmRuntime, dir: &std::path::Path) -> Program {
    let bytes = std::fs::read(guest::http_hello()).expect("guest wasm");
    let (digest, path) = write_wasm(dir, &bytes);
    rt.load(&digest, &path).await.expect("load http-hello")
}

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

pub fn serve(rt: &WasmRuntime, program: &Program, spec: InstanceSpec) -> HttpServer {
    rt.serve_http(program, spec, listener())
        .expect("serve_http")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    pub sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        self.sender.ready().await.expect("connection ready");
        let req = Request::get(path)
            .header("host", "test.local")
            .body(Empty::new())
            .unwrap();
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A GET on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    Client::connect(addr).await.get(path).await
}

pub fn http_spec(env: &[(&str, &str)]) -> (InstanceSpec, Outputs) {
    let (mut s, out) = spec(&["http-hello"]);
    s.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.memory_limit = Some(64 << 20);
    (s, out)
}
