//! A wasi:http component behind a Service (`cargo bench --bench services`): requests/s
//! and p50/p99 latency through its ClusterIP, directly to its pod IP, and of `wasmtime
//! serve` running the same component on the same machine in the same run (the baseline).
//!
//! A release `spindle server` with its embedded agent (real CNI sandbox, the nftables
//! Service proxy) runs a one-replica Deployment of tests/guests/http-hello behind a
//! ClusterIP Service; images come from a real registry (Debian's docker-registry).
//! `SPINDLE_BENCH_CONNECTIONS` (16) keep-alive HTTP/1.1 connections send `GET /` back to
//! back for `SPINDLE_BENCH_SECS` (10) seconds, from `SPINDLE_BENCH_CLIENT_THREADS` (1)
//! client threads, after a 1 s warm-up of each side; `SPINDLE_BENCH_ROUNDS` (5) rounds
//! in alternating order (A B C, C B A, ...), each figure the median over the rounds.
//! Target: the ClusterIP path at 80 % or more of `wasmtime serve`'s throughput, with no
//! errors on either side. The baseline is the `wasmtime` CLI from `$WASMTIME_BIN` or
//! `PATH` (`cargo install wasmtime-cli --version <the workspace's wasmtime> --locked`),
//! serving with `-Scli` on 127.0.0.1; a CLI of another version is reported as such. The
//! cluster has its own bridge, nftables table, CIDRs and DNS port (`common::Net`).

mod common;
#[path = "common/load.rs"]
mod load;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    announce, build_guest, push, size, start_registry, start_server, wait_node_ready, Net,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::Api;
use load::{rounds, wasmtime_baseline};

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
    announce("services");
    let conns: usize = size("SPINDLE_BENCH_CONNECTIONS", 16, 4);
    let secs: f64 = size("SPINDLE_BENCH_SECS", 10.0, 0.5);
    let n_rounds: usize = size("SPINDLE_BENCH_ROUNDS", 5, 2);
    let client_threads: usize = size("SPINDLE_BENCH_CLIENT_THREADS", 1, 1);
    let work = common::Work::new()?;
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
        "services bench: GET /, {conns} keep-alive connections, {secs} s x {n_rounds} rounds, client on {client_threads} thread(s), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let reg = start_registry(work.path())?;
    let image = push(&reg, &wasm, "bench/http-hello:v1")?;
    // Dropped after the server: removes what a killed agent left on the host.
    let net = Net::fresh();
    let server = setup.block_on(async {
        let mut args = net.server_args();
        args.extend(["--node-name", "bench", "--agent-port", "0"].map(String::from));
        let s = start_server(work.path(), "server", &args).await?;
        wait_node_ready(&s.client, "bench").await?;
        anyhow::Ok(s)
    })?;
    let (pod, vip) = setup.block_on(serve_deployment(&server.client, &image))?;

    let (baseline, version_note) = wasmtime_baseline(&wasm);
    let mut sides = vec![("ClusterIP (nftables DNAT)", vip), ("pod IP", pod)];
    if let Some((_, addr)) = &baseline {
        sides.push(("wasmtime serve (baseline)", *addr));
    }
    let measured = rounds(&client, &sides, "/", conns, secs, n_rounds);
    drop(baseline);
    if let [via_vip, via_pod, base] = measured.as_slice() {
        let met = via_vip.rate() / base.rate() >= TARGET_RATIO && via_vip.clean(base);
        println!(
            "ratio ClusterIP/wasmtime: {}   (target throughput >= {TARGET_RATIO:.2} without errors: {}){version_note}",
            via_vip.ratios(base),
            if met { "MET" } else { "NOT MET" }
        );
        println!(
            "ratio pod IP/wasmtime: {}{version_note}",
            via_pod.ratios(base)
        );
    }
    // Requests that fail on Spindle's side are a broken run in quick mode.
    let errors: u64 = measured.iter().take(2).map(|r| r.errors()).sum();
    // Dropping it stops the server gracefully: its agent removes the pod's network.
    drop(server);
    drop(setup);
    drop(net);
    drop(work);
    anyhow::ensure!(
        !common::quick() || errors == 0,
        "{errors} requests failed through the Service or the pod IP"
    );
    Ok(())
}
