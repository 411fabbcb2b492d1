//! Memory and CPU limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use spindle_wasm::{ExitReason, Program, WasmRuntime};

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

/// Spins `argc × 10⁷` iterations, so one compiled module serves every amount of work.
const SPIN_BY_ARGC: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i64)
    (drop (call $args_sizes (i32.const 0) (i32.const 4)))
    (local.set $i (i64.mul (i64.extend_i32_u (i32.load (i32.const 0))) (i64.const 10000000)))
    (loop $l
      (local.set $i (i64.sub (local.get $i) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $i) (i64.const 0))))))
"#;

async fn spin(rt: &WasmRuntime, p: &Program, units: usize, cpu: Option<u64>) -> Duration {
    let argv = vec!["spin"; units];
    let (mut s, _) = spec(&argv);
    s.cpu_millis = cpu;
    let t = Instant::now();
    let st = within(120, rt.start(p, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    t.elapsed()
}

/// Enough work for about 150 ms of one core.
async fn calibrate(rt: &WasmRuntime, p: &Program) -> (usize, Duration) {
    let mut units = 1;
    loop {
        let t = spin(rt, p, units, None).await;
        if t >= Duration::from_millis(150) || units >= 4096 {
            return (units, t);
        }
        units *= 2;
    }
}

#[tokio::test]
async fn cpu_limit_throttles_to_a_tenth() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), SPIN_BY_ARGC).await;
    let (units, _) = calibrate(&rt, &p).await;
    // The fastest of two: CPU stolen by another process slows a sample down, and a slow
    // sample here would understate the ratio.
    let full = spin(&rt, &p, units, Some(1000))
        .await
        .min(spin(&rt, &p, units, Some(1000)).await);
    let unlimited = spin(&rt, &p, units, None).await;
    let tenth = spin(&rt, &p, units, Some(100)).await;
    let ratio = tenth.as_secs_f64() / full.as_secs_f64();
    eprintln!(
        "cpu: {units} units: 1000m {full:?}, unlimited {unlimited:?}, 100m {tenth:?}, ratio {ratio:.1}"
    );
    assert!(ratio >= 4.0, "100m took only {ratio:.1}× as long as 1000m");
}

#[tokio::test]
async fn limited_neighbour_does_not_slow_others() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), SPIN_BY_ARGC).await;
    let forever = load_wat(&rt, dir.path(), FOREVER).await;
    let (units, _) = calibrate(&rt, &p).await;

    let mut alone = Duration::MAX;
    let mut beside = Duration::MAX;
    for _ in 0..3 {
        alone = alone.min(spin(&rt, &p, units, None).await);
        let (mut s, _) = spec(&["neighbour"]);
        s.cpu_millis = Some(100);
        let mut neighbour = rt.start(&forever, s).unwrap();
        beside = beside.min(spin(&rt, &p, units, None).await);
        neighbour.kill();
        within(5, neighbour.wait()).await;
    }
    eprintln!("neighbour: alone {alone:?}, beside a 100m spinner {beside:?}");
    assert!(
        beside.as_secs_f64() < alone.as_secs_f64() * 1.5,
        "alone {alone:?}, beside a 100m spinner {beside:?}"
    );
}

#[tokio::test]
async fn throttled_guest_is_killable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), FOREVER).await;
    let (mut s, _) = spec(&["x"]);
    s.cpu_millis = Some(10);
    let mut inst = rt.start(&p, s).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    inst.kill();
    let st = within(5, inst.wait()).await;
    assert_eq!(st.reason, ExitReason::Killed);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}
