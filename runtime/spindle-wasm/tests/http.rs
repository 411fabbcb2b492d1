//! `serve_http` end to end with a real wasi:http component (tests/guests/http-hello, built
//! with cargo for wasm32-wasip2 on first use). The CPU budget test is in http_cpu.rs, a
//! binary of its own, so that these tests do not compete with it for the CPU.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::*;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use spindle_wasm::{ExitReason, ProgramKind, WasmError};

#[tokio::test]
async fn get_env_trap_oom_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    assert_eq!(program.kind(), ProgramKind::HttpComponent);
    assert!(program.exports_http() && program.exports_run());

    let (spec, out) = http_spec(&[("GREETING", "hi there")]);
    let mut server = serve(&rt, &program, spec);
    let addr = server.local_addr();

    assert_eq!(
        within(20, get(addr, "/")).await,
        (StatusCode::OK, "hello from /".to_owned())
    );
    let mut client = Client::connect(addr).await;
    assert_eq!(
        within(10, client.get("/some/path?x=1")).await,
        (StatusCode::OK, "hello from /some/path".to_owned())
    );
    assert_eq!(
        within(10, client.get("/env/GREETING")).await,
        (StatusCode::OK, "hi there".to_owned())
    );
    // Nothing of the agent's environment leaks in.
    assert_eq!(within(10, client.get("/env/PATH")).await.1, "unset");

    // A trap answers 500 to that request only; the same connection keeps working.
    let (status, _) = within(10, client.get("/trap")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        within(10, client.get("/after-trap")).await,
        (StatusCode::OK, "hello from /after-trap".to_owned())
    );
    let err = out.stderr.text();
    assert!(err.contains("GET /trap: guest trapped"), "{err}");

    // So does running out of the 64 MiB memory limit.
    let (status, _) = within(20, client.get("/alloc")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        within(10, client.get("/")).await,
        (StatusCode::OK, "hello from /".to_owned())
    );
    let err = out.stderr.text();
    assert!(
        err.contains(&format!("memory limit of {} bytes exceeded", 64u64 << 20)),
        "{err}"
    );

    // Guest stdout/stderr go to the spec's sinks.
    assert_eq!(within(10, client.get("/log")).await.1, "logged");
    assert!(out.stdout.text().contains("log-stdout\n"));
    assert!(out.stderr.text().contains("log-stderr\n"));

    // The last instance may still be winding down after its body was sent.
    let t = Instant::now();
    while server.stats().active > 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", server.stats());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stats = server.stats();
    assert_eq!(stats.requests, 9, "{stats:?}");
    assert_eq!(stats.failed, 2, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");

    server.stop();
    let st = within(10, server.wait()).await;
    assert_eq!((st.code, st.reason), (0, ExitReason::Completed), "{st:?}");
    assert_eq!(within(1, server.wait()).await, st);
    // The listener is closed: nothing accepts on the port any more.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "port still accepts after stop");
    // The idle keep-alive connection was closed too.
    let req = Request::get("/")
        .header("host", "test.local")
        .body(Empty::new())
        .unwrap();
    let reused = async {
        client.sender.ready().await?;
        client.sender.send_request(req).await.map(|_| ())
    };
    assert!(
        within(5, reused).await.is_err(),
        "connection still open after stop"
    );
    assert_eq!(rt.live_instances(), 0);
}

#[tokio::test]
async fn fifty_concurrent_requests() {
    let dir = tempfile::tempdir().unwrap();
    // 16 pool slots for 50 requests: requests wait for a slot instead of failing.
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    let (spec, _) = http_spec(&[]);
    let mut server = serve(&rt, &program, spec);
    let addr = server.local_addr();

    let requests: Vec<_> = (0..50)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/r{i}")).await }))
        .collect();
    for (i, r) in requests.into_iter().enumerate() {
        let (status, body) = within(60, r).await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_eq!(body, format!("hello from /r{i}"));
    }
    let stats = server.stats();
    assert_eq!((stats.requests, stats.failed, stats.rejected), (50, 0, 0));
    server.stop();
    within(10, server.wait()).await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    let (spec, _) = http_spec(&[]);
    let server = serve(&rt, &program, spec);

    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    // Several streams at once on the one connection.
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://test.local/h2/{i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.expect("h2 response");
                assert_eq!(resp.version(), hyper::Version::HTTP_2);
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        })
        .collect();
    for (i, r) in requests.into_iter().enumerate() {
        assert_eq!(
            within(30, r).await.unwrap(),
            (StatusCode::OK, format!("hello from /h2/{i}"))
        );
    }
}

#[tokio::test]
async fn stop_ends_in_flight_instances() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    let (spec, _) = http_spec(&[]);
    let mut server = serve(&rt, &program, spec);
    let addr = server.local_addr();
    // Warm up, so the spinning request below is surely running when we stop.
    assert_eq!(within(20, get(addr, "/")).await.0, StatusCode::OK);
    // The warm-up's instance may still count as active for a moment after its response;
    // wait for it to end, or the wait below could mistake it for the spinning request
    // and stop the server before that request was even sent.
    let t = Instant::now();
    while server.stats().active != 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "warm-up never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let spinning = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.sender.ready().await.unwrap();
        let req = Request::get("/spin")
            .header("host", "x")
            .body(Empty::new())
            .unwrap();
        c.sender.send_request(req).await.map(|r| r.status())
    });
    let t = Instant::now();
    while server.stats().active == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "spin never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rt.live_instances(), 1);

    // From another thread, through a Killer, as the agent would.
    let killer = server.killer();
    std::thread::spawn(move || killer.kill()).join().unwrap();
    let st = within(5, server.wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    assert_eq!(rt.live_instances(), 0);
    assert_eq!(server.stats().active, 0);
    // The spinning request got no 200: its connection was closed (or it got a 503).
    if let Ok(status) = within(5, spinning).await.unwrap() {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    let (spec, _) = http_spec(&[]);
    let server = serve(&rt, &program, spec);
    let addr = server.local_addr();
    assert_eq!(within(20, get(addr, "/")).await.0, StatusCode::OK);
    drop(server);
    let t = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "port still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn outgoing_http_from_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    // The upstream is a second server running the same component.
    let upstream = serve(&rt, &program, http_spec(&[]).0);
    let server = serve(&rt, &program, http_spec(&[]).0);
    let path = format!("/fetch/{}/from-upstream", upstream.local_addr());
    assert_eq!(
        within(30, get(server.local_addr(), &path)).await,
        (StatusCode::OK, "200 hello from /from-upstream".to_owned())
    );
    // A refused connection is an error the guest sees, not a trap.
    let closed = listener().local_addr().unwrap();
    let (status, body) = within(30, get(server.local_addr(), &format!("/fetch/{closed}/"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn run_export_and_network_permission() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;

    // A component with both exports still runs as a command.
    let (s, out) = spec(&["http-hello"]);
    let st = within(20, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    assert_eq!(out.stdout.text(), "run: hello\n");

    // wasi:sockets only with `network: true`.
    let target = listener();
    let addr = target.local_addr().unwrap().to_string();
    let (s, out) = spec(&["http-hello", "connect", &addr]);
    let st = within(20, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Error, "{st:?}");
    assert!(out.stdout.text().is_empty());
    assert!(
        out.stderr.text().contains("connect"),
        "{}",
        out.stderr.text()
    );

    let (mut s, out) = spec(&["http-hello", "connect", &addr]);
    s.network = true;
    let st = within(20, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(
        st.reason,
        ExitReason::Completed,
        "{st:?} {}",
        out.stderr.text()
    );
    assert_eq!(out.stdout.text(), "connected\n");
    target.accept().expect("the guest's connection");
}

#[tokio::test]
async fn outgoing_http_from_a_command_needs_network() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    let upstream = serve(&rt, &program, http_spec(&[]).0);
    let target = format!("{}/from-run", upstream.local_addr());

    let (s, out) = spec(&["http-hello", "fetch", &target]);
    let st = within(20, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Error, "{st:?}");
    assert!(
        out.stderr.text().contains("HttpRequestDenied"),
        "{}",
        out.stderr.text()
    );

    let (mut s, out) = spec(&["http-hello", "fetch", &target]);
    s.network = true;
    let st = within(20, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(
        st.reason,
        ExitReason::Completed,
        "{st:?} {}",
        out.stderr.text()
    );
    assert_eq!(out.stdout.text(), "200 hello from /from-run\n");
}

#[tokio::test]
async fn serve_http_refuses_commands() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let module = load_wat(&rt, dir.path(), HELLO).await;
    assert!(!module.exports_http());
    let (s, _) = spec(&["x"]);
    match rt.serve_http(&module, s, listener()) {
        Err(WasmError::NotRunnable(msg)) => {
            assert!(msg.contains("incoming-handler"), "{msg}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("served a p1 command"),
    }
}

/// SPN-14: the memory limit of an HTTP component applied to each request instance, so N
/// concurrent requests could use N times the pod's limit. Now the instances share it.
#[tokio::test]
async fn concurrent_requests_share_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_http_hello(&rt, dir.path()).await;
    // 64 MiB for the whole server.
    let (spec, out) = http_spec(&[]);
    let mut server = serve(&rt, &program, spec);
    let addr = server.local_addr();
    let holding = tokio::spawn(async move { get(addr, "/hold/40/60000").await });
    let t = Instant::now();
    while server.stats().memory_bytes < 40 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:?}",
            server.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A second 40 MiB would fit one instance's 64 MiB, not the server's.
    let (status, _) = within(20, get(addr, "/hold/40/0")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let err = out.stderr.text();
    assert!(
        err.contains(&format!("memory limit of {} bytes exceeded", 64u64 << 20)),
        "{err}"
    );
    // Small requests still fit beside the holder.
    assert_eq!(
        within(10, get(addr, "/small")).await,
        (StatusCode::OK, "hello from /small".to_owned())
    );
    holding.abort();
    server.stop();
    within(10, server.wait()).await;
    assert_eq!(rt.guest_memory_bytes(), 0);
}

/// SPN-14: one pod's HTTP server flooded with slow requests used to take every slot of
/// the runtime's pool, so other pods' requests (and starts) failed. Now it has at most
/// `http_max_concurrency` instances, a bounded queue and 503s beyond, and another pod's
/// server on the same runtime still answers.
#[tokio::test]
async fn flooded_server_keeps_to_its_share_of_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 16);
    cfg.http_max_concurrency = 4;
    cfg.http_max_queue = 4;
    let rt = spindle_wasm::WasmRuntime::new(cfg).expect("runtime");
    let program = load_http_hello(&rt, dir.path()).await;
    let (spec, _) = http_spec(&[]);
    let mut flooded = serve(&rt, &program, spec);
    let (spec, _) = http_spec(&[]);
    let other = serve(&rt, &program, spec);
    let (addr, other_addr) = (flooded.local_addr(), other.local_addr());

    // 20 requests that each hold their instance for a minute, all at once.
    let flood: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(addr, "/hold/1/60000").await }))
        .collect();
    // Four run; four wait for up to SLOT_WAIT and twelve are refused at once: 16 × 503.
    let t = Instant::now();
    while flood.iter().filter(|r| r.is_finished()).count() < 16 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            flooded.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = flooded.stats();
    assert_eq!((stats.active, stats.peak_active), (4, 4), "{stats:?}");
    assert_eq!(stats.rejected, 16, "{stats:?}");
    assert!(rt.live_instances() <= 4, "{}", rt.live_instances());
    let mut flood = flood;
    for r in flood.iter_mut().filter(|r| r.is_finished()) {
        let (status, body) = r.await.expect("flood request");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    // The other pod's server answers at once, and so does a command.
    assert_eq!(
        within(10, get(other_addr, "/")).await,
        (StatusCode::OK, "hello from /".to_owned())
    );
    let hello = load_wat(&rt, dir.path(), HELLO).await;
    let (s, _) = common::spec(&["hello"]);
    let st = within(10, rt.start(&hello, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    assert!(flooded.stats().peak_active <= 4, "{:?}", flooded.stats());

    for r in &flood {
        r.abort();
    }
    flooded.stop();
    within(10, flooded.wait()).await;
    assert_eq!(
        within(10, get(other_addr, "/after")).await,
        (StatusCode::OK, "hello from /after".to_owned())
    );
}
