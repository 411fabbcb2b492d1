//! Memory limits. The CPU limits are in cpu_limits.rs, a binary of its own, because they
//! measure time and the tests here would compete with them for the CPU.

mod common;

use std::time::{Duration, Instant};

use common::*;
use spindle_wasm::ExitReason;

/// Grows memory 1 MiB at a time, 300 times. If a grow fails it exits with the memory
/// size in MiB (so the test can see how far it got); `trap_on_oom` makes it trap
/// instead, the way a Rust guest aborts.
fn grower(trap_on_oom: bool) -> String {
    let on_fail = if trap_on_oom {
        "unreachable"
    } else {
        "(call $exit (i32.div_u (memory.size) (i32.const 16)))"
    };
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (local $n i32)
            (local.set $n (i32.const 300))
            (loop $l
              (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
                (then {on_fail}))
              ;; touch the new MiB so it is really used
              (i32.store (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4)) (i32.const 1))
              (local.set $n (i32.sub (local.get $n) (i32.const 1)))
              (br_if $l (local.get $n)))))"#
    )
}

#[tokio::test]
async fn memory_limit_ends_in_oomkilled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());

    let program = load_wat(&rt, dir.path(), &grower(false)).await;
    let (mut s, _) = spec(&["grow"]);
    s.memory_limit = Some(64 << 20);
    let st = within(10, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (137, ExitReason::OOMKilled), "{st:?}");
    let msg = st.message.as_deref().unwrap_or_default();
    assert!(msg.contains(&format!("{}", 64u64 << 20)), "{msg}");
    // The guest reported how much memory it got: never more than the limit.
    let got = mib_reached(&st);
    assert!((60..=64).contains(&got), "guest had {got} MiB");

    let program = load_wat(&rt, dir.path(), &grower(true)).await;
    let (mut s, _) = spec(&["grow"]);
    s.memory_limit = Some(64 << 20);
    let st = within(10, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (137, ExitReason::OOMKilled), "{st:?}");

    // Without a limit the same guest gets its 300 MiB.
    let (s, _) = spec(&["grow"]);
    let st = within(10, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
}

/// Grows its memory by 100 MiB at once, then spins (run it with a small CPU limit).
const HOLD_100_MIB: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (memory.grow (i32.const 1600))) (loop $l (br $l))))
"#;

/// Asserts an OOM kill whose message says `why`.
fn assert_oom(st: &spindle_wasm::ExitStatus, why: &str) {
    assert_eq!((st.code, st.reason), (137, ExitReason::OOMKilled), "{st:?}");
    let msg = st.message.as_deref().unwrap_or_default();
    assert!(msg.contains(why), "{st:?}");
}

/// The MiB a `grower` guest reached before its OOM kill, from its exit code.
fn mib_reached(st: &spindle_wasm::ExitStatus) -> u64 {
    let msg = st.message.as_deref().unwrap_or_default();
    msg.rsplit("exited with ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in {msg}"))
}

/// SPN-14: a guest without `limits.memory` used to get the pool's whole slot (4 GiB), and
/// all guests together had no cap below the node's RAM, so the kernel's OOM killer would
/// pick the agent. Now the first stops at the node's default limit and the second at the
/// node's budget for guests; both end OOMKilled while other guests keep running.
#[tokio::test]
async fn unlimited_guest_and_all_guests_together_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 16);
    cfg.default_memory_limit = 64 << 20;
    cfg.guest_memory_budget = 160 << 20;
    let rt = spindle_wasm::WasmRuntime::new(cfg).expect("runtime");
    let grow = load_wat(&rt, dir.path(), &grower(false)).await;
    let hello = load_wat(&rt, dir.path(), HELLO).await;

    // No limit: the 300 MiB the guest asks for stop at the 64 MiB default.
    let (s, _) = spec(&["grow"]);
    let st = within(10, rt.start(&grow, s).unwrap().wait()).await;
    assert_oom(&st, "without limits.memory");
    assert!((60..=64).contains(&mib_reached(&st)), "{st:?}");

    // One guest holds 100 MiB of the node's 160 MiB; another, though its own limit is
    // 128 MiB, is stopped by the node's budget.
    let holder = load_wat(&rt, dir.path(), HOLD_100_MIB).await;
    let (mut s, _) = spec(&["hold"]);
    s.memory_limit = Some(128 << 20);
    s.cpu_millis = Some(10);
    let mut held = rt.start(&holder, s).unwrap();
    let t = Instant::now();
    while rt.guest_memory_bytes() < 100 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the holder never grew"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut s, _) = spec(&["grow"]);
    s.memory_limit = Some(128 << 20);
    let st = within(10, rt.start(&grow, s).unwrap().wait()).await;
    assert_oom(&st, "node's memory");
    assert!(mib_reached(&st) < 64, "{st:?}");

    // The runtime still runs other guests, and the holder is unharmed.
    let (s, out) = spec(&["hello"]);
    let st = within(10, rt.start(&hello, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    assert_eq!(out.stdout.text(), "hello\n");

    // Once the holder is gone its memory is the node's again.
    held.kill();
    assert_eq!(within(5, held.wait()).await.reason, ExitReason::Killed);
    assert_eq!(rt.guest_memory_bytes(), 0);
    // (Exit codes stop at 125, so the guest's own limit stays below that many MiB.)
    let (mut s, _) = spec(&["grow"]);
    s.memory_limit = Some(120 << 20);
    let st = within(10, rt.start(&grow, s).unwrap().wait()).await;
    assert!((116..=120).contains(&mib_reached(&st)), "{st:?}");
}

#[tokio::test]
async fn initial_memory_over_limit_is_oomkilled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    // 128 MiB of initial memory.
    let program = load_wat(
        &rt,
        dir.path(),
        r#"(module (memory (export "memory") 2048) (func (export "_start")))"#,
    )
    .await;
    let (mut s, _) = spec(&["big"]);
    s.memory_limit = Some(64 << 20);
    let st = within(10, rt.start(&program, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::OOMKilled, "{st:?}");
}
