//! Helper servers a test starts (a registry, `wasmtime serve`) listen on port 0 and the
//! test reads the port the server got from /proc. A port picked by binding port 0 and
//! closing it again can be taken by another process before the server binds it; a port
//! read from the child's own sockets is free of that race and certainly the child's.
//! Shared by tests/common, crate tests and benches/common through `#[path]` includes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// Wait until `child` listens on a TCP port and return that port. Panics, after killing
/// it, if it exits first or does not listen within `limit`.
pub fn wait_listening(child: &mut Child, what: &str, limit: Duration) -> u16 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(port) = listening_port(child.id()) {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it listened: {status}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not listen on any TCP port within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port that process `pid` has a listening socket on, if any.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        text.lines().skip(1).find_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]);
            if !listening {
                return None;
            }
            u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()
        })
    })
}

/// The status code of `GET path` over plain HTTP/1.0, if an HTTP server answers in time.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
