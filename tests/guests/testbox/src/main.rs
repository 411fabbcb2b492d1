//! testbox: one guest, many behaviours, chosen by argv[1], so every end-to-end test can say
//! what its pod should do in the manifest (`args: [...]`) instead of needing its own module.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cmd = argv.get(1).map(String::as_str).unwrap_or("args");
    let rest = &argv[argv.len().min(2)..];
    let code = match cmd {
        "args" => {
            println!("{}", argv.join(" "));
            0
        }
        "echo" => {
            println!("{}", rest.join(" "));
            0
        }
        "stderr" => {
            eprintln!("{}", rest.join(" "));
            0
        }
        "exit" => rest.first().and_then(|s| s.parse().ok()).unwrap_or(1),
        "env" => {
            for name in rest {
                println!("{name}={}", std::env::var(name).unwrap_or_default());
            }
            0
        }
        "cat" => cat(rest),
        "fail" => {
            println!("failing: {}", rest.join(" "));
            1
        }
        "waitcat" => {
            // Poll for a file another container writes, then print it.
            let path = rest.first().map(String::as_str).unwrap_or("");
            loop {
                if let Ok(text) = std::fs::read_to_string(path) {
                    print!("{text}");
                    break 0;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        "write" => match (rest.first(), rest.get(1)) {
            (Some(path), Some(text)) => match std::fs::write(path, format!("{text}\n")) {
                Ok(()) => {
                    println!("wrote {path}");
                    0
                }
                Err(e) => {
                    eprintln!("write {path}: {e}");
                    1
                }
            },
            _ => 2,
        },
        // fill PATH MIB [hold]: write MIB MiB to PATH in 1 MiB chunks, say how far it got
        // (a full volume fails the write), then exit, or with `hold` keep running (a
        // workload holding its data, for the node to measure).
        "fill" => match (rest.first(), rest.get(1).and_then(|s| s.parse::<usize>().ok())) {
            (Some(path), Some(mib)) => {
                let code = fill(path, mib);
                if rest.get(2).map(String::as_str) == Some("hold") {
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                code
            }
            _ => 2,
        },
        "ls" => {
            let dir = rest.first().map(String::as_str).unwrap_or(".");
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    for n in names {
                        println!("{n}");
                    }
                    0
                }
                Err(e) => {
                    eprintln!("ls {dir}: {e}");
                    1
                }
            }
        }
        "alloc" => {
            let mib: usize = rest.first().and_then(|s| s.parse().ok()).unwrap_or(300);
            let mut held: Vec<Vec<u8>> = Vec::new();
            for i in 0..mib {
                held.push(vec![(i % 251) as u8; 1 << 20]);
                if i % 16 == 0 {
                    println!("allocated {} MiB", i + 1);
                }
            }
            println!("allocated {mib} MiB in all ({} chunks)", held.len());
            0
        }
        "hold" => {
            // Grows the heap (linear memory) by MiB, touched, then sleeps holding it.
            let mib: usize = rest.first().and_then(|s| s.parse().ok()).unwrap_or(50);
            let held: Vec<Vec<u8>> = (0..mib).map(|i| vec![(i % 251) as u8 | 1; 1 << 20]).collect();
            println!("holding {} MiB", held.len());
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                std::hint::black_box(&held);
            }
        }
        "spin" => {
            let n: u64 = rest
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200_000_000);
            let start = Instant::now();
            let mut x: u64 = 1;
            for i in 0..n {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                // Keep the optimiser from folding the loop away.
                if x == 42 {
                    print!("!");
                }
            }
            println!("spin {n} took {} ms ({x})", start.elapsed().as_millis());
            0
        }
        "sleep" => {
            let secs: u64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(0);
            if secs == 0 {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            std::thread::sleep(Duration::from_secs(secs));
            0
        }
        "seq" => {
            let n: u64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(10);
            let delay: u64 = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            for i in 1..=n {
                println!("line {i}");
                let _ = std::io::stdout().flush();
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
            }
            0
        }
        "loop" => loop {
            std::hint::black_box(0u64);
        },
        "trap" => {
            panic!("testbox asked to trap");
        }
        // symlink TARGET LINK: what a hostile guest plants in a writable volume.
        "symlink" => match (rest.first(), rest.get(1)) {
            (Some(target), Some(link)) => symlink(target, link),
            _ => 2,
        },
        // plant READ DIR TARGET: print READ if it can be read (an escape worked), else
        // replace the directory DIR by a link to TARGET and fail, so the next start mounts
        // the link (the security review's subPath reproduction).
        "plant" => match (rest.first(), rest.get(1), rest.get(2)) {
            (Some(read), Some(dir), Some(target)) => {
                if let Ok(text) = std::fs::read_to_string(read) {
                    print!("ESCAPED: {text}");
                    0
                } else {
                    let _ = std::fs::remove_dir(dir);
                    symlink(target, dir);
                    1
                }
            }
            _ => 2,
        },
        other => {
            eprintln!("testbox: unknown command {other:?}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// symlink(2) through wasi-libc, which std links on both WASI targets (std's own
/// `symlink_path` is unstable).
fn symlink(target: &str, link: &str) -> i32 {
    use std::ffi::{c_char, c_int, CString};
    extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let (Ok(t), Ok(l)) = (CString::new(target), CString::new(link)) else {
        return 2;
    };
    // SAFETY: both are valid NUL-terminated strings for the duration of the call.
    if unsafe { symlink(t.as_ptr(), l.as_ptr()) } != 0 {
        eprintln!(
            "symlink {target} {link}: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    println!("linked {link} -> {target}");
    0
}

fn cat(paths: &[String]) -> i32 {
    if paths.is_empty() {
        // Like cat(1): stdin to stdout.
        use std::io::{Read, Write};
        let mut buf = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
            eprintln!("cat: stdin: {e}");
            return 1;
        }
        let _ = std::io::stdout().write_all(&buf);
        return 0;
    }
    let mut code = 0;
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("cat {path}: {e}");
                code = 1;
            }
        }
    }
    code
}

fn fill(path: &str, mib: usize) -> i32 {
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fill {path}: {e}");
            return 1;
        }
    };
    let chunk = vec![0x5a_u8; 1 << 20];
    for done in 0..mib {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            println!("fill {path}: {e} after {done} MiB");
            return 1;
        }
    }
    println!("filled {path} with {mib} MiB");
    0
}
