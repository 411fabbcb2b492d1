//! Pieces the benchmarks share.

#![allow(dead_code)]

use std::process::Child;

/// A number from the environment (benchmark sizes), or the default.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process, killed (and reaped) when dropped, on success and error paths alike.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
