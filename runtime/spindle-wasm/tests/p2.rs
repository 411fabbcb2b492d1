//! WASI p2 components exporting wasi:cli/run, written in the component text format. They
//! import nothing, which is enough to exercise the component path of load, start, exit
//! mapping and kill; real WASI p2 guests are tested by the agent.

mod common;

use std::time::Duration;

use common::*;
use spindle_wasm::{ExitReason, ProgramKind};

fn command(body: &str) -> String {
    format!(
        r#"(component
             (core module $m (func (export "run") (result i32) {body}))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $run_inst (export "run" (func $run)))
             (export "wasi:cli/run@0.2.0" (instance $run_inst)))"#
    )
}

#[tokio::test]
async fn component_run_ok_and_err() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());

    let ok = load_wat(&rt, dir.path(), &command("i32.const 0")).await;
    assert_eq!(ok.kind(), ProgramKind::Component);
    let st = within(10, rt.start(&ok, spec(&["ok"]).0).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (0, ExitReason::Completed), "{st:?}");

    let err = load_wat(&rt, dir.path(), &command("i32.const 1")).await;
    let st = within(10, rt.start(&err, spec(&["err"]).0).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (1, ExitReason::Error), "{st:?}");
}

#[tokio::test]
async fn component_trap_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());

    let trap = load_wat(&rt, dir.path(), &command("unreachable")).await;
    let st = within(10, rt.start(&trap, spec(&["trap"]).0).unwrap().wait()).await;
    assert_eq!((st.code, st.reason), (134, ExitReason::Error), "{st:?}");

    let spin = load_wat(&rt, dir.path(), &command("(loop $l (br $l)) i32.const 0")).await;
    let mut inst = rt.start(&spin, spec(&["spin"]).0).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    inst.kill();
    let st = within(5, inst.wait()).await;
    assert_eq!((st.code, st.reason), (137, ExitReason::Killed), "{st:?}");
}

#[tokio::test]
async fn component_cache_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat::parse_str(command("i32.const 0")).unwrap();
    let (digest, path) = write_wasm(dir.path(), &bytes);
    assert!(runtime(dir.path())
        .load(&digest, &path)
        .await
        .unwrap()
        .compiled());
    let rt = runtime(dir.path());
    let p = rt.load(&digest, &path).await.unwrap();
    assert!(!p.compiled());
    assert_eq!(p.kind(), ProgramKind::Component);
    let st = within(10, rt.start(&p, spec(&["ok"]).0).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed);
}
