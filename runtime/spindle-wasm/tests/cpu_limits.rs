//! CPU limits, alone in their test binary: they measure time, and the memory tests
//! (a 300 MiB grower among them) would compete with them for the CPU. The tests here
//! take turns ([`SERIAL`]) for the same reason, and compare ratios of samples taken
//! close together, the median of several, never one absolute time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use spindle_wasm::{ExitReason, OutputSink, Program, WasmRuntime};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Spins forever, writing a byte to stdout after every 10⁵ iterations: progress
/// markers, so a test sees when the guest runs and when it is held back.
const TICKER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ".")
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (loop $forever
      (local.set $i (i32.const 100000))
      (loop $l
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br_if $l (local.get $i)))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
"#;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn spin(rt: &WasmRuntime, p: &Program, units: usize, cpu: Option<u64>) -> Duration {
    let argv = vec!["spin"; units];
    let (mut s, _) = spec(&argv);
    s.cpu_millis = cpu;
    let t = Instant::now();
    let st = within(120, rt.start(p, s).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
    t.elapsed()
}

/// Enough work for about 100 ms of one core (a 100m sample is then ten of the
/// limiter's 100 ms periods).
async fn calibrate(rt: &WasmRuntime, p: &Program) -> usize {
    let mut units = 1;
    while units < 4096 && spin(rt, p, units, None).await < Duration::from_millis(100) {
        units *= 2;
    }
    units
}

#[tokio::test]
async fn cpu_limit_throttles_to_a_tenth() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), SPIN_BY_ARGC).await;
    let units = calibrate(&rt, &p).await;
    // Each round measures the three side by side, so a change in the load other
    // processes put on the machine affects a round's samples alike.
    let (mut full_ratios, mut tenth_ratios) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let unlimited = spin(&rt, &p, units, None).await;
        let full = spin(&rt, &p, units, Some(1000)).await;
        let tenth = spin(&rt, &p, units, Some(100)).await;
        eprintln!("cpu: {units} units: unlimited {unlimited:?}, 1000m {full:?}, 100m {tenth:?}");
        full_ratios.push(full.as_secs_f64() / unlimited.as_secs_f64());
        tenth_ratios.push(tenth.as_secs_f64() / full.as_secs_f64());
    }
    let (full, tenth) = (median(full_ratios), median(tenth_ratios));
    eprintln!("cpu: median 1000m/unlimited {full:.2}, 100m/1000m {tenth:.1}");
    // A whole core is all a one-thread guest can use: that limit costs it nothing.
    assert!(
        (0.67..1.5).contains(&full),
        "1000m took {full:.2}× as long as no limit"
    );
    // A tenth of a core takes about ten times as long.
    assert!(tenth >= 4.0, "100m took only {tenth:.1}× as long as 1000m");
}

#[tokio::test]
async fn limited_neighbour_does_not_slow_others() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), SPIN_BY_ARGC).await;
    let forever = load_wat(&rt, dir.path(), FOREVER).await;
    let units = calibrate(&rt, &p).await;

    let mut ratios = Vec::new();
    for _ in 0..5 {
        let alone = spin(&rt, &p, units, None).await;
        let (mut s, _) = spec(&["neighbour"]);
        s.cpu_millis = Some(100);
        let mut neighbour = rt.start(&forever, s).unwrap();
        let beside = spin(&rt, &p, units, None).await;
        neighbour.kill();
        within(5, neighbour.wait()).await;
        eprintln!("neighbour: alone {alone:?}, beside a 100m spinner {beside:?}");
        ratios.push(beside.as_secs_f64() / alone.as_secs_f64());
    }
    let ratio = median(ratios);
    assert!(
        ratio < 1.5,
        "beside a 100m spinner a guest took {ratio:.2}× as long as alone"
    );
}

/// When each progress marker of a guest arrived.
struct Stamps(tokio::sync::mpsc::UnboundedSender<Instant>);

impl OutputSink for Stamps {
    fn write(&self, _: &[u8]) {
        let _ = self.0.send(Instant::now());
    }
}

async fn next_marker(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>) -> Instant {
    within(10, rx.recv())
        .await
        .expect("the guest makes progress")
}

/// A throttled guest spends most of its time waiting for its next CPU period; a kill
/// must end it at once, not when that wait is over. The pause is measured from the
/// guest's progress markers, and the kill lands inside one.
#[tokio::test]
async fn throttled_guest_is_killed_within_its_pause() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = load_wat(&rt, dir.path(), TICKER).await;
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (mut s, _) = spec(&["ticker"]);
        s.stdout = Arc::new(Stamps(tx));
        s.cpu_millis = Some(10);
        let mut inst = rt.start(&p, s).unwrap();
        // Half a second of markers: several runs of the guest and the pauses between.
        let first = next_marker(&mut rx).await;
        let mut gaps = Vec::new();
        let mut last = first;
        while last - first < Duration::from_millis(500) {
            let t = next_marker(&mut rx).await;
            gaps.push(t - last);
            last = t;
        }
        let pause = gaps.iter().copied().max().unwrap_or_default();
        let mut sorted = gaps.clone();
        sorted.sort();
        let typical = sorted[sorted.len() / 2];
        // At 10m the guest is held back nearly all the time, in pauses far longer than
        // the time between two markers while it runs.
        let paused: Duration = gaps.iter().filter(|&&g| g > typical * 20).sum();
        assert!(
            paused > (last - first) / 2,
            "paused {paused:?} of {:?} (markers {typical:?} apart): is the guest throttled?",
            last - first
        );
        // Inside a pause once no marker has come for a quarter of one.
        while let Ok(Some(_)) = tokio::time::timeout(pause / 4, rx.recv()).await {}
        let t = Instant::now();
        inst.kill();
        let st = within(5, inst.wait()).await;
        let took = t.elapsed();
        assert_eq!(st.reason, ExitReason::Killed);
        eprintln!("kill: {took:?} inside a pause of {pause:?}");
        ratios.push(took.as_secs_f64() / pause.as_secs_f64());
    }
    let ratio = median(ratios);
    assert!(
        ratio < 0.25,
        "the kill waited for the throttled guest's pause to end: {ratio:.2} of a pause"
    );
}
