//! Benchmark sizes. `cargo bench` passes `--bench` to a `harness = false` target and
//! `cargo test` does not: under `cargo test` (CI's scripts/test, a debug build) every
//! benchmark runs in quick mode, a few pods or requests for a few seconds, so that a
//! broken benchmark fails the suite at once. Quick figures are printed, never asserted:
//! a debug build on a busy CI machine says nothing about performance.

#![allow(dead_code)]

/// True unless run by `cargo bench`.
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// A size from the environment (`name`), else `full` under `cargo bench` and `small` in
/// quick mode.
pub fn size<T: std::str::FromStr>(name: &str, full: T, small: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { small } else { full })
}

/// Says which mode runs, first thing in a benchmark's output.
pub fn announce(bench: &str) {
    if quick() {
        println!("{bench}: quick mode (no --bench: small sizes, figures not meaningful; `cargo bench --bench {bench}` measures)");
    }
}
