//! A wasi:http component behind a Service (`cargo bench --bench services`): requests/s
//! and p50/p99 latency through its ClusterIP, directly to its pod IP, and of `wasmtime
//! serve` running the same component on the same machine in the same run (the baseline).
//!
//! A release `spindle server` with its embedded agent (real CNI sandbox, the nftables
//! Service proxy) runs a one-replica Deployment of tests/guests/http-hello behind a
//! ClusterIP Service; images come from a real registry (Debian's docker-registry).
//! `SPINDLE_BENCH_CONNECTIONS` (16) keep-alive HTTP/1.1 connections send `GET /` back to
//! back for `SPINDLE_BENCH_SECS` (10) seconds after a 1 s warm-up, from
//! `SPINDLE_BENCH_CLIENT_THREADS` (1) client threads. Target: the ClusterIP path at
//! 80 % or more of `wasmtime serve`'s throughput. The baseline is the `wasmtime` CLI from
//! `$WASMTIME_BIN` or `PATH` (`cargo install wasmtime-cli --version 48.0.8 --locked`),
//! serving with `-Scli` on 127.0.0.1.

mod common;
#[path = "common/load.rs"]
mod load;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{build_guest, push, start_registry, start_server, wait_node_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::Api;
use load::{env_or, find_wasmtime, measure, ratio, start_wasmtime};

const TARGET_RATIO: f64 = 0.80;

async fn serve_deployment(
    client: &kube::Client,
    image: &str,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web", "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    }))?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deploy)
        .await?;
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await?;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow::anyhow!("the Service got no ClusterIP"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(120);
    let pod_ip = loop {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let ready = list.items.iter().find_map(|p| {
            let st = p.status.as_ref()?;
            let ready = st
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| st.pod_ip.clone()).flatten()
        });
        if let Some(ip) = ready {
            break ip;
        }
        anyhow::ensure!(Instant::now() < deadline, "the web pod never became Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pod: SocketAddr = format!("{pod_ip}:8080").parse()?;
    let vip: SocketAddr = format!("{cluster_ip}:80").parse()?;
    // The Service proxy programs the VIP shortly after the endpoint turns ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(1)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "ClusterIP {vip} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((pod, vip))
}

fn main() -> anyhow::Result<()> {
    let conns: usize = env_or("SPINDLE_BENCH_CONNECTIONS", 16);
    let secs: f64 = env_or("SPINDLE_BENCH_SECS", 10.0);
    let client_threads: usize = env_or("SPINDLE_BENCH_CLIENT_THREADS", 1);
    let work = tempfile::tempdir()?;
    let wasm = build_guest(
        "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
        "http-hello",
        "wasm32-wasip2",
    )?;
    let setup = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads.max(1))
        .enable_all()
        .build()?;
    println!(
        "services bench: GET /, {conns} keep-alive connections, {secs} s, client on {client_threads} thread(s), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let reg = start_registry(work.path())?;
    let image = push(&reg, &wasm, "bench/http-hello:v1")?;
    let server = setup.block_on(async {
        let s = start_server(
            work.path(),
            "server",
            &[
                "--node-name",
                "bench",
                "--agent-port",
                "0",
                "--cluster-dns-port",
                "0",
            ],
        )
        .await?;
        wait_node_ready(&s.client, "bench").await?;
        anyhow::Ok(s)
    })?;
    let (pod, vip) = setup.block_on(serve_deployment(&server.client, &image))?;

    let via_vip = measure(&client, "ClusterIP (nftables DNAT)", vip, "/", conns, secs);
    let via_pod = measure(&client, "pod IP", pod, "/", conns, secs);
    let base = match find_wasmtime().map(|bin| start_wasmtime(&bin, &wasm)) {
        Some(Ok((child, addr))) => {
            let l = measure(&client, "wasmtime serve (baseline)", addr, "/", conns, secs);
            drop(child);
            Some(l)
        }
        Some(Err(e)) => {
            println!("baseline missing: {e}");
            None
        }
        None => {
            println!(
                "baseline missing: no wasmtime CLI on PATH or in $WASMTIME_BIN \
                 (cargo install wasmtime-cli --version 48.0.8 --locked)"
            );
            None
        }
    };
    if let Some(base) = base {
        let r = via_vip.rate() / base.rate();
        println!(
            "ratio ClusterIP/wasmtime: throughput {}   p50 {}   p99 {}   (target throughput >= {TARGET_RATIO:.2}: {})",
            ratio(via_vip.rate(), base.rate()),
            ratio(
                via_vip.quantile(0.5).as_secs_f64(),
                base.quantile(0.5).as_secs_f64()
            ),
            ratio(
                via_vip.quantile(0.99).as_secs_f64(),
                base.quantile(0.99).as_secs_f64()
            ),
            if r >= TARGET_RATIO { "MET" } else { "NOT MET" }
        );
        println!(
            "ratio pod IP/wasmtime: throughput {}",
            ratio(via_pod.rate(), base.rate())
        );
    }
    // Dropping it stops the server gracefully: its agent removes the pod's network.
    drop(server);
    drop(setup);
    drop(work);
    Ok(())
}
