//! The test harness itself: a kubectl that hangs is killed within its bound and the test
//! fails saying which command hung, so one stuck server cannot stall CI. Needs no cluster:
//! the "server" is a socket that accepts connections (the kernel completes them from the
//! listen backlog) and never answers.

mod common;

use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::net::slot_dir;
use common::{
    kubectl_limit, output_within, plain_request, Cluster, LineReader, NetNames, Supervised,
    KUBECTL_DEFAULT, KUBECTL_LIMIT, KUBECTL_OLDEST,
};

/// A listening loopback socket nobody reads from, and a cluster value pointing at it.
fn silent_server() -> (TcpListener, Cluster) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, Cluster::offline(&format!("http://{addr}")))
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn hung_kubectl_is_killed_and_named() {
    let (_listener, c) = silent_server();
    for k in [KUBECTL_DEFAULT, KUBECTL_OLDEST] {
        // A watch gets no request timeout: only the process bound can end it.
        let args = ["get", "pods", "-w"];
        let mut cmd = c.kubectl_cmd(k, &args);
        let limit = Duration::from_secs(3);
        let start = Instant::now();
        let err = catch_unwind(AssertUnwindSafe(|| output_within(&mut cmd, None, limit)))
            .expect_err("a kubectl that never gets an answer must fail the test");
        let took = start.elapsed();
        let msg = panic_text(err);
        assert!(msg.starts_with("HUNG: "), "{msg}");
        assert!(msg.contains(&format!("{k} ")), "names the kubectl: {msg}");
        assert!(msg.contains("get pods -w"), "names the command: {msg}");
        assert!(msg.contains("after 3s"), "names the bound: {msg}");
        assert!(
            took >= limit && took < limit + Duration::from_secs(5),
            "{k}: killed after {took:?}, bound {limit:?}"
        );
        // Really killed, and reaped.
        let pid: u32 = msg
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {msg}"));
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{k}: pid {pid} still exists"
        );
    }
}

#[test]
fn plain_requests_carry_a_request_timeout_and_kubectl_honours_it() {
    let (_listener, c) = silent_server();
    let has_timeout = |args: &[&str]| {
        c.kubectl_cmd(KUBECTL_DEFAULT, args)
            .get_args()
            .any(|a| a.to_string_lossy().starts_with("--request-timeout="))
    };
    for plain in [
        &["get", "pods"][..],
        &["-n", "x", "get", "pods", "-o", "name"],
        &["apply", "-f", "-"],
        &["logs", "p"],
        &["describe", "pod", "p"],
    ] {
        assert!(
            has_timeout(plain),
            "{plain:?} should carry --request-timeout"
        );
    }
    for stream in [
        &["get", "pods", "-w"][..],
        &["get", "cm", "--watch", "-o", "name"],
        &["logs", "-f", "p"],
        &["exec", "-i", "p", "--", "cat"],
        &["attach", "-i", "p"],
        &["port-forward", "pod/p", ":80"],
        &["rollout", "status", "deploy/d", "--timeout=90s"],
        &["wait", "--for=delete", "pod/p"],
        &["delete", "pod", "p"],
    ] {
        assert!(
            !has_timeout(stream),
            "{stream:?} must not carry --request-timeout"
        );
    }
    assert!(plain_request(&["get", "pods"]) && !plain_request(&["get", "pods", "-w"]));
    // A wait with its own timeout is bounded beyond it, never cut short.
    assert_eq!(kubectl_limit(&["get", "pods"]), KUBECTL_LIMIT);
    assert_eq!(
        kubectl_limit(&["rollout", "status", "deploy/d", "--timeout=90s"]),
        Duration::from_secs(150)
    );
    assert_eq!(
        kubectl_limit(&["wait", "--timeout", "3m", "--for=delete", "pod/p"]),
        Duration::from_secs(240)
    );
    // kubectl itself gives up on a silent server when asked to: the request timeout ends
    // a plain request before the process bound would.
    for k in [KUBECTL_DEFAULT, KUBECTL_OLDEST] {
        let start = Instant::now();
        let out = output_within(
            &mut c.kubectl_cmd(k, &["get", "pods", "--request-timeout=1s"]),
            None,
            Duration::from_secs(60),
        );
        assert!(!out.status.success(), "{k}: {out:?}");
        assert!(start.elapsed() < Duration::from_secs(60));
    }
}

#[test]
fn a_stream_that_outlives_its_bound_is_killed() {
    let (_listener, c) = silent_server();
    let mut cmd = c.kubectl_cmd(KUBECTL_DEFAULT, &["get", "pods", "-w"]);
    let s = Supervised::spawn(&mut cmd, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.expired() {
        assert!(
            Instant::now() < deadline,
            "the watchdog never fired: {}",
            s.state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.with(|c| c.try_wait()).expect("wait").is_some(),
        "not reaped"
    );
    assert!(
        s.state().contains("killed after its bound of 2s"),
        "{}",
        s.state()
    );
    // A LineReader waiting on a stream that ended says so at once, not after its timeout.
    let r = LineReader::spawn(c.kubectl_cmd(KUBECTL_DEFAULT, &["version", "--client"]));
    let err = catch_unwind(AssertUnwindSafe(|| {
        r.wait_for("never printed", Duration::from_secs(60))
    }))
    .expect_err("no such line");
    assert!(panic_text(err).contains("the stream ended"));
}

/// Two test clusters at once, even in two processes (cargo-nextest runs one per test),
/// never share a bridge, nft table, netns prefix or CIDR; a slot whose holder died is
/// taken again, cleaned of what the holder left behind.
#[test]
fn network_names_are_unique_across_processes_and_reclaimed() {
    let a = NetNames::fresh();
    let b = NetNames::fresh();
    assert_ne!(a.slot, b.slot);
    for (x, y) in [
        (&a.bridge, &b.bridge),
        (&a.netns_prefix, &b.netns_prefix),
        (&a.cluster_cidr, &b.cluster_cidr),
        (&a.service_cidr, &b.service_cidr),
    ] {
        assert_ne!(x, y);
    }
    // Another process holds slot n (as another test process's cluster would) and leaves
    // a bridge of that slot behind, as a holder killed by CI's time limit would.
    let n = a.slot;
    drop(a);
    let lock = slot_dir().join(n.to_string());
    let holder = Supervised::spawn(
        std::process::Command::new("flock")
            // --close: only flock itself holds the lock, released once it is reaped.
            .args(["--nonblock", "--close"])
            .arg(&lock)
            .args(["-c", "echo held; exec sleep 600"])
            .stdout(std::process::Stdio::piped()),
        Duration::from_secs(120),
    );
    let out = holder.with(|c| c.stdout.take()).expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).expect("read");
    assert_eq!(
        line,
        "held\n",
        "flock could not take slot {n}: {}",
        holder.state()
    );
    let bridge = format!("spts{n}");
    let st = std::process::Command::new("ip")
        .args(["link", "add", &bridge, "type", "bridge"])
        .status()
        .expect("ip");
    assert!(st.success(), "ip link add {bridge}");
    assert!(
        NetNames::try_slot(n).is_none(),
        "slot {n} handed out while another process holds it"
    );
    let others: Vec<NetNames> = (0..3).map(|_| NetNames::fresh()).collect();
    assert!(
        others.iter().all(|o| o.slot != n),
        "slot {n} handed out twice"
    );
    assert!(std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists());
    // The holder dies: its slot is free again, and what it left is gone.
    holder.with(common::kill_group);
    let again = NetNames::try_slot(n).expect("a dead holder's slot is free");
    let left = std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists();
    if left {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &bridge])
            .status();
    }
    assert!(!left, "the dead holder's bridge {bridge} was not removed");
    drop(again);
}
