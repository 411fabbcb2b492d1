//! WASI p1 command modules end to end, guests written in WAT.

mod common;

use std::time::{Duration, Instant};

use common::*;
use spindle_wasm::{ExitReason, ExitStatus, Preopen, ProgramKind, WasmError};

#[tokio::test]
async fn hello_goes_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), HELLO).await;
    assert_eq!(program.kind(), ProgramKind::Module);
    let (spec, out) = spec(&["hello"]);
    let mut inst = rt.start(&program, spec).unwrap();
    let st = within(10, inst.wait()).await;
    assert_eq!(
        st,
        ExitStatus {
            code: 0,
            reason: ExitReason::Completed,
            message: None
        }
    );
    assert_eq!(out.stdout.text(), "hello\n");
    assert_eq!(out.stderr.text(), "");
    // wait() again gives the same answer.
    assert_eq!(within(1, inst.wait()).await, st);
}

#[tokio::test]
async fn proc_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(
        &rt,
        dir.path(),
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 3)) unreachable))"#,
    )
    .await;
    let (spec, _) = spec(&["x"]);
    let st = within(10, rt.start(&program, spec).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (3, ExitReason::Error));
}

#[tokio::test]
async fn trap_is_134_with_description() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(
        &rt,
        dir.path(),
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .await;
    let (spec, _) = spec(&["x"]);
    let st = within(10, rt.start(&program, spec).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (134, ExitReason::Error));
    let msg = st.message.unwrap();
    assert!(msg.contains("unreachable"), "{msg}");
}

/// Writes "tick" to stderr, then spins forever without another host call.
const TICK_THEN_SPIN: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $l (br $l))))"#;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// A guest looping without host calls is interrupted by a kill from another thread (as
/// the agent kills) about as fast as a trivial guest runs from start to exit: the kill
/// does not wait for a host call that never comes.
#[tokio::test]
async fn infinite_loop_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spinner = load_wat(&rt, dir.path(), TICK_THEN_SPIN).await;
    let hello = load_wat(&rt, dir.path(), HELLO).await;
    let (mut kills, mut runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let st = within(10, rt.start(&hello, spec(&["hello"]).0).unwrap().wait()).await;
        assert_eq!(st.reason, ExitReason::Completed, "{st:?}");
        runs.push(t.elapsed());

        let (spec, out) = spec(&["x"]);
        let mut inst = rt.start(&spinner, spec).unwrap();
        // In its loop once it has ticked.
        within(5, async {
            while out.stderr.text() != "tick\n" {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let killer = inst.killer();
        let t = Instant::now();
        std::thread::spawn(move || killer.kill()).join().unwrap();
        let st = within(10, inst.wait()).await;
        kills.push(t.elapsed());
        assert_eq!((st.code, st.reason), (137, ExitReason::Killed));
        // The slot is back.
        assert_eq!(rt.live_instances(), 0);
    }
    let (kill, run) = (median(kills), median(runs));
    eprintln!("kill of a spinning guest {kill:?}, a trivial guest's whole run {run:?}");
    assert!(
        kill < run * 20,
        "killing a spinning guest took {kill:?}, a trivial guest's whole run {run:?}"
    );
}

#[tokio::test]
async fn sleeping_guest_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), SLEEPER).await;
    let (spec, _) = spec(&["x"]);
    let mut inst = rt.start(&program, spec).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), inst.wait())
            .await
            .is_err(),
        "guest should still be sleeping"
    );
    inst.kill();
    let st = within(5, inst.wait()).await;
    assert_eq!((st.code, st.reason), (137, ExitReason::Killed));
}

#[tokio::test]
async fn output_streams_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), TICK_THEN_SPIN).await;
    let (spec, out) = spec(&["x"]);
    let mut inst = rt.start(&program, spec).unwrap();
    within(5, async {
        while out.stderr.text() != "tick\n" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    inst.kill();
    assert_eq!(within(5, inst.wait()).await.reason, ExitReason::Killed);
}

/// Prints argv and environ as the guest sees them (NUL-separated) to stdout.
const ARGS_ENV: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    ;; counts/sizes at 16/20, pointer arrays at 1024, strings at 4096 and 8192
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $print (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 1024) (i32.const 8192)))
    (call $print (i32.const 8192) (i32.load (i32.const 20)))))
"#;

#[tokio::test]
async fn argv_env_and_working_dir() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), ARGS_ENV).await;
    let (mut spec, out) = spec(&["prog", "--flag", "two words"]);
    spec.env = vec![
        ("A".into(), "1".into()),
        ("PWD".into(), "/ignored".into()),
        ("B".into(), "x=y".into()),
    ];
    spec.working_dir = Some("/work".into());
    let st = within(10, rt.start(&program, spec).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed);
    assert_eq!(
        out.stdout.bytes(),
        b"prog\0--flag\0two words\0A=1\0B=x=y\0PWD=/work\0".to_vec()
    );
}

/// Exit codes: 0 all good; 10 cannot open data/in.txt; 11 wrong content;
/// 12 could open ../secret.txt; 13 could open /etc/passwd; 14 could create a file in
/// the read-only preopen (fd 4).
const FILES: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "in.txt")
  (data (i32.const 120) "../secret.txt")
  (data (i32.const 140) "/etc/passwd")
  (data (i32.const 160) "new.txt")
  (func (export "_start")
    ;; open in.txt in preopen fd 3 for reading, fd out at 200
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 6)
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))
      (then (call $exit (i32.const 10))))
    ;; read into 300 via iovec at 208
    (i32.store (i32.const 208) (i32.const 300))
    (i32.store (i32.const 212) (i32.const 16))
    (drop (call $read (i32.load (i32.const 200)) (i32.const 208) (i32.const 1) (i32.const 216)))
    (if (i32.ne (i32.load8_u (i32.const 300)) (i32.const 0x6b)) ;; 'k'
      (then (call $exit (i32.const 11))))
    (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 13)
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
      (then (call $exit (i32.const 12))))
    (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 140) (i32.const 11)
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
      (then (call $exit (i32.const 13))))
    ;; O_CREAT with write rights in the read-only preopen
    (if (i32.eqz (call $open (i32.const 4) (i32.const 0) (i32.const 160) (i32.const 7)
                    (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 200)))
      (then (call $exit (i32.const 14))))))
"#;

#[tokio::test]
async fn only_preopens_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), FILES).await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let ro = root.path().join("ro");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(data.join("in.txt"), "kept").unwrap();
    std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
    let (mut spec, _) = spec(&["files"]);
    spec.preopens = vec![
        Preopen {
            host: data,
            guest: "/data".into(),
            read_only: false,
        },
        Preopen {
            host: ro.clone(),
            guest: "/ro".into(),
            read_only: true,
        },
    ];
    let st = within(10, rt.start(&program, spec).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (0, ExitReason::Completed), "{st:?}");
    assert!(!ro.join("new.txt").exists());
}

#[tokio::test]
async fn missing_preopen_dir_fails_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let program = load_wat(&rt, dir.path(), HELLO).await;
    let (mut spec, _) = spec(&["x"]);
    spec.preopens = vec![Preopen {
        host: dir.path().join("nope"),
        guest: "/data".into(),
        read_only: true,
    }];
    let err = rt.start(&program, spec).err().expect("must fail");
    assert!(matches!(err, WasmError::Preopen { .. }), "{err}");
}

#[tokio::test]
async fn pool_exhaustion_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(dir.path(), 2);
    let program = load_wat(&rt, dir.path(), SLEEPER).await;
    let a = rt.start(&program, spec(&["x"]).0).unwrap();
    let b = rt.start(&program, spec(&["x"]).0).unwrap();
    let err = rt
        .start(&program, spec(&["x"]).0)
        .err()
        .expect("pool is full");
    assert!(matches!(err, WasmError::PoolExhausted(2)), "{err}");
    assert!(err.to_string().contains("exhausted"));
    drop(a);
    let mut b = b;
    b.kill();
    within(5, b.wait()).await;
    within(5, async {
        while rt.live_instances() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut c = rt.start(&program, spec(&["x"]).0).unwrap();
    c.kill();
    assert_eq!(within(5, c.wait()).await.reason, ExitReason::Killed);
}
