use super::*;

use std::sync::Mutex as StdMutex;

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};

/// What the fake API server saw: (method, path, body).
type Log = Arc<StdMutex<Vec<(String, String, Value)>>>;

/// A client whose API server records every request; its first `refuse` creates answer
/// 409, as a name collision would.
fn fake_client(refuse: usize) -> (Client, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let creates_before = {
                let mut seen = seen.lock().expect("log");
                let n = seen.iter().filter(|(m, _, _)| m == "POST").count();
                seen.push((method.clone(), path, body.clone()));
                n
            };
            let (code, answer) = if method == "POST" && creates_before < refuse {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "AlreadyExists", "code": 409, "message": "exists"});
                (409, status)
            } else if method == "POST" {
                (201, body)
            } else {
                (
                    200,
                    json!({"metadata": {"name": "patched", "namespace": "web"},
                    "involvedObject": {}}),
                )
            };
            let resp = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
        }
    });
    (Client::new(svc, "default"), log)
}

fn pod_ref() -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("web-1".into()),
        namespace: Some("web".into()),
        uid: Some("u-1".into()),
        ..Default::default()
    }
}

fn requests(log: &Log) -> Vec<(String, String, Value)> {
    log.lock().expect("log").clone()
}

/// Let the recorder's writer drain its queue. The tests run on paused time against an
/// in-memory API server, so tokio advances this sleep only once every task is idle, that
/// is once the writer has written everything it will.
async fn drained() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn creates_an_event_as_kubernetes_names_and_fills_it() {
    let (client, log) = fake_client(0);
    let rec = Recorder::on_host(client, "kubelet", "node-a");
    rec.publish(
        &pod_ref(),
        EventType::Warning,
        "BackOff",
        "Back-off restarting",
    )
    .await;
    drained().await;
    let reqs = requests(&log);
    assert_eq!(reqs.len(), 1);
    let (method, path, ev) = &reqs[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/api/v1/namespaces/web/events")
    );
    let name = ev["metadata"]["name"].as_str().expect("name");
    let (base, hex) = name.split_once('.').expect("<object>.<hex nanos>");
    assert_eq!(base, "web-1");
    assert!(u128::from_str_radix(hex, 16).is_ok(), "{name}");
    assert_eq!(ev["involvedObject"]["uid"], "u-1");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "BackOff");
    assert_eq!(ev["message"], "Back-off restarting");
    assert_eq!(ev["count"], 1);
    assert_eq!(
        ev["source"],
        json!({"component": "kubelet", "host": "node-a"})
    );
    assert_eq!(ev["reportingComponent"], "kubelet");
    assert_eq!(ev["reportingInstance"], "node-a");
}

#[tokio::test(start_paused = true)]
async fn a_repeat_bumps_the_count_instead_of_creating_another() {
    let (client, log) = fake_client(0);
    let rec = Recorder::new(client, "replicaset-controller");
    let r = pod_ref();
    rec.publish(&r, EventType::Normal, "Pulled", "pulled").await;
    rec.publish(&r, EventType::Normal, "Pulled", "pulled").await;
    rec.publish(&r, EventType::Normal, "Pulled", "pulled").await;
    rec.publish(&r, EventType::Normal, "Pulled", "other message")
        .await;
    drained().await;
    let reqs = requests(&log);
    let methods: Vec<_> = reqs.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["POST", "PATCH", "PATCH", "POST"]);
    let first = reqs[0].2["metadata"]["name"].as_str().expect("name");
    assert_eq!(reqs[1].1, format!("/api/v1/namespaces/web/events/{first}"));
    assert_eq!(reqs[1].2["count"], 2);
    assert_eq!(reqs[2].2["count"], 3);
    assert_eq!(reqs[3].2["count"], 1);
    assert_eq!(reqs[3].2["reportingInstance"], "replicaset-controller");
}

#[tokio::test(start_paused = true)]
async fn a_name_collision_takes_the_next_nanosecond() {
    let (client, log) = fake_client(1);
    let rec = Recorder::new(client, "c");
    rec.publish(&pod_ref(), EventType::Normal, "R", "m").await;
    drained().await;
    let reqs = requests(&log);
    let names: Vec<_> = reqs
        .iter()
        .map(|(_, _, b)| b["metadata"]["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names.len(), 2, "one refused create, one retry");
    let nanos =
        |n: &str| u128::from_str_radix(n.rsplit_once('.').expect("dot").1, 16).expect("hex");
    assert_eq!(nanos(&names[1]), nanos(&names[0]) + 1);
    // The retried event is the one a repeat then counts on.
    rec.publish(&pod_ref(), EventType::Normal, "R", "m").await;
    drained().await;
    let last = requests(&log).pop().expect("patch");
    assert_eq!(
        last.1,
        format!("/api/v1/namespaces/web/events/{}", names[1])
    );
}

fn object(i: usize) -> ObjectReference {
    ObjectReference {
        name: Some(format!("p-{i}")),
        uid: Some(format!("u-{i}")),
        ..pod_ref()
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_recorder_writes_at_its_rate_and_drops_what_its_queue_cannot_hold() {
    let (client, log) = fake_client(0);
    let rec = Recorder::on_host(client, "kubelet", "node-a").rate_limited(50.0, 100);
    // Published faster than written: only the queue's worth survives.
    for i in 0..1200 {
        rec.publish(
            &object(i),
            EventType::Normal,
            "Started",
            "Started container main",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(requests(&log).len(), 100, "the burst at once");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_a_second = requests(&log).len();
    assert!((149..=151).contains(&after_a_second), "{after_a_second}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reqs = requests(&log);
    assert_eq!(reqs.len(), QUEUE_LEN, "the rest dropped");
    // In the order published: the first ones were kept.
    assert_eq!(reqs[0].2["involvedObject"]["name"], "p-0");
    assert_eq!(
        reqs[QUEUE_LEN - 1].2["involvedObject"]["name"],
        format!("p-{}", QUEUE_LEN - 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_chatty_controller_is_combined_then_throttled_per_object() {
    let (client, log) = fake_client(0);
    let rec = Recorder::new(client, "job-controller");
    for i in 0..60 {
        rec.publish(
            &pod_ref(),
            EventType::Normal,
            "SuccessfulCreate",
            &format!("Created pod: j-{i}"),
        )
        .await;
    }
    drained().await;
    let reqs = requests(&log);
    let methods: Vec<_> = reqs.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods.len(), 25, "{methods:?}");
    assert_eq!(methods.iter().filter(|m| **m == "POST").count(), 10);
    assert_eq!(
        reqs[9].2["message"],
        format!("{}Created pod: j-9", correlator::COMBINED_PREFIX)
    );
    assert_eq!(reqs[24].2["count"], 16);
    assert_eq!(
        reqs[24].2["message"],
        format!("{}Created pod: j-24", correlator::COMBINED_PREFIX)
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_reports_still_make_one_combined_event() {
    // A controller creating pods in parallel reports from many tasks at once; the
    // combined event's repeats must patch it, not create a second one while its create
    // is still in flight.
    let (client, log) = fake_client(0);
    let rec = Recorder::new(client, "job-controller");
    let reports = (0..20).map(|i| {
        let rec = rec.clone();
        async move {
            let m = format!("Created pod: j-{i}");
            rec.publish(&pod_ref(), EventType::Normal, "SuccessfulCreate", &m)
                .await;
        }
    });
    futures::future::join_all(reports).await;
    drained().await;
    let reqs = requests(&log);
    let posts = reqs.iter().filter(|(m, _, _)| m == "POST").count();
    assert_eq!(
        (posts, reqs.len()),
        (10, 20),
        "nine events, one combined, ten patches"
    );
}
