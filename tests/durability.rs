//! kill -9 of the server while clients write: every write a client saw acknowledged is
//! there after a restart on the same data dir. Uses kube-rs as a second real client.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use kube::Api;

/// Acknowledged writes before the kill: enough that losing the last few unflushed
/// ones would show.
const ACKED_BEFORE_KILL: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9() {
    let mut c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(c.kube_client().await, "default");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let api = api.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("i".to_string(), i.to_string())])),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once enough writes were acknowledged to mean something, while the writers
    // are still writing: however fast the build and the machine, not after a fixed time.
    let count = || acked.lock().unwrap_or_else(|p| p.into_inner()).len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count() < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged in two minutes",
            count()
        );
        assert!(
            !writers.iter().all(|w| w.is_finished()),
            "every writer stopped after {} writes",
            count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.kill9();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    c.launch();
    let api: Api<ConfigMap> = Api::namespaced(c.kube_client().await, "default");
    let present: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await
        .expect("list after restart")
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
