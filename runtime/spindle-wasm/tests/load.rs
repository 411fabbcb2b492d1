//! Loading: the precompiled cache, in-memory reuse, and refusing what cannot run.

mod common;

use common::*;
use spindle_wasm::{ExitReason, LoadOrigin, WasmError};

#[tokio::test]
async fn precompiled_artifact_survives_a_new_runtime() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = wat::parse_str(HELLO).unwrap();
    let (digest, path) = write_wasm(cache.path(), &bytes);

    let first = runtime(cache.path());
    let p = first.load(&digest, &path).await.unwrap();
    assert!(p.compiled());
    assert_eq!(p.digest(), digest);
    // Same runtime again: in memory, nothing compiled or read.
    let again = first.load(&digest, &path).await.unwrap();
    assert_eq!(again.origin(), LoadOrigin::Compiled);
    let s = first.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.memory_hits), (1, 0, 1));
    drop(first);

    // A new runtime (as after a restart) maps the artifact instead of compiling.
    let second = runtime(cache.path());
    // The source may even be gone.
    std::fs::remove_file(&path).unwrap();
    let p = second.load(&digest, &path).await.unwrap();
    assert!(!p.compiled());
    assert_eq!(p.origin(), LoadOrigin::DiskCache);
    let s = second.cache_stats();
    assert_eq!((s.compiled, s.disk_hits), (0, 1));
    let (spec, out) = spec(&["hello"]);
    let st = within(10, second.start(&p, spec).unwrap().wait()).await;
    assert_eq!(st.reason, ExitReason::Completed);
    assert_eq!(out.stdout.text(), "hello\n");
}

#[tokio::test]
async fn concurrent_loads_compile_once() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime(cache.path());
    let bytes = wat::parse_str(HELLO).unwrap();
    let (digest, path) = write_wasm(cache.path(), &bytes);
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let rt = rt.clone();
            let digest = digest.clone();
            let path = path.clone();
            tokio::spawn(async move { rt.load(&digest, &path).await.map(|_| ()) })
        })
        .collect();
    for l in loads {
        l.await.unwrap().unwrap();
    }
    assert_eq!(rt.cache_stats().compiled, 1);
}

#[tokio::test]
async fn corrupt_artifact_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = wat::parse_str(HELLO).unwrap();
    let (digest, path) = write_wasm(cache.path(), &bytes);
    runtime(cache.path()).load(&digest, &path).await.unwrap();
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let rt = runtime(cache.path());
    assert!(rt.load(&digest, &path).await.unwrap().compiled());
}

#[tokio::test]
async fn digest_is_checked() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime(cache.path());
    let bytes = wat::parse_str(HELLO).unwrap();
    let (_, path) = write_wasm(cache.path(), &bytes);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = rt.load(&wrong, &path).await.unwrap_err();
    assert!(matches!(err, WasmError::DigestMismatch { .. }), "{err}");
    let err = rt.load("sha256:../../etc", &path).await.unwrap_err();
    assert!(matches!(err, WasmError::InvalidDigest(_)), "{err}");
}

async fn not_runnable(bytes: &[u8]) -> String {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime(cache.path());
    let (digest, path) = write_wasm(cache.path(), bytes);
    match rt.load(&digest, &path).await {
        Err(WasmError::NotRunnable(msg)) => msg,
        Err(e) => panic!("expected NotRunnable, got {e:?}"),
        Ok(p) => panic!("expected NotRunnable, loaded {p:?}"),
    }
}

#[tokio::test]
async fn not_runnable_says_why() {
    let msg = not_runnable(b"#!/bin/sh\necho hi\n").await;
    assert!(msg.contains("not a WebAssembly binary"), "{msg}");

    let reactor =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#)
            .unwrap();
    let msg = not_runnable(&reactor).await;
    assert!(
        msg.contains("no _start") && msg.contains("reactor"),
        "{msg}"
    );

    let library =
        wat::parse_str(r#"(module (func (export "add") (param i32) (result i32) local.get 0))"#)
            .unwrap();
    let msg = not_runnable(&library).await;
    assert!(
        msg.contains("module exports no _start function: not a WASI command"),
        "{msg}"
    );

    let foreign =
        wat::parse_str(r#"(module (import "env" "host_thing" (func)) (func (export "_start")))"#)
            .unwrap();
    let msg = not_runnable(&foreign).await;
    assert!(msg.contains("env::host_thing"), "{msg}");

    let unknown_wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    let msg = not_runnable(&unknown_wasi).await;
    assert!(msg.contains("no_such_call"), "{msg}");

    let bad_start = wat::parse_str(r#"(module (func (export "_start") (param i32)))"#).unwrap();
    let msg = not_runnable(&bad_start).await;
    assert!(msg.contains("_start"), "{msg}");

    let no_run = wat::parse_str(
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $f (canon lift (core func $i "f")))
             (export "f" (func $f)))"#,
    )
    .unwrap();
    let msg = not_runnable(&no_run).await;
    assert!(msg.contains("wasi:cli/run"), "{msg}");

    let http = wat::parse_str(
        r#"(component
             (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
             (core module $m (func (export "run") (result i32) i32.const 0))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $run_inst (export "run" (func $run)))
             (export "wasi:cli/run@0.2.0" (instance $run_inst)))"#,
    )
    .unwrap();
    let msg = not_runnable(&http).await;
    assert!(msg.contains("wasi:http/outgoing-handler"), "{msg}");
}

#[tokio::test]
async fn invalid_wasm_is_a_compile_error() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime(cache.path());
    // Valid header, garbage after it.
    let (digest, path) = write_wasm(cache.path(), b"\0asm\x01\0\0\0\xff\xff\xff");
    let err = rt.load(&digest, &path).await.unwrap_err();
    assert!(matches!(err, WasmError::Compile { .. }), "{err}");
}
