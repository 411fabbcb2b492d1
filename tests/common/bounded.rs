//! Child processes with a deadline. A server that accepts connections and never answers
//! makes kubectl wait forever (its default request timeout is none), and `cargo test` has
//! no per-test timeout: without a bound, one hang eats CI's whole time limit and says
//! nothing. Here a run that outlives its bound is killed and the test fails naming the
//! command, the bound and what it printed so far.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bound of one kubectl call that is a plain request (or a few). Generous: a debug
/// server on a loaded 2-core machine answers in well under a second.
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(120);
/// kubectl's own `--request-timeout` for plain requests: kubectl then fails by itself,
/// with its own message, before the process bound kills it.
pub const KUBECTL_REQUEST_TIMEOUT: &str = "60s";
/// Added to a kubectl wait that has its own `--timeout` (rollout status, wait, drain, …),
/// so that its timeout, not ours, ends a legitimate wait.
const OWN_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// Run `cmd` with `stdin` fed to it (none: an empty stdin) and its output captured. If it
/// has not exited within `limit`, kill it and its process group and panic.
pub fn output_within(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let what = describe(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a kill reaches what it started too (script's shell and
        // kubectl) and no grandchild keeps our pipes open.
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let input = stdin.unwrap_or_default().to_vec();
    let mut pipe = child.stdin.take().expect("stdin pipe");
    // A writer thread: a child that does not read its stdin must not block us.
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let stdout = Drain::start(child.stdout.take());
    let stderr = Drain::start(child.stderr.take());
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if started.elapsed() >= limit {
            kill_group(&mut child);
            panic!(
                "HUNG: {what} (pid {pid}) was still running after {limit:?}; killed it.\n\
                 stdout so far: {}\nstderr so far: {}",
                String::from_utf8_lossy(&stdout.finish(Duration::from_secs(2))),
                String::from_utf8_lossy(&stderr.finish(Duration::from_secs(2))),
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.finish(Duration::from_secs(5)),
        stderr: stderr.finish(Duration::from_secs(5)),
    }
}

/// The bound of a kubectl run with these arguments: the default, or the command's own
/// `--timeout` (e.g. `rollout status --timeout=90s`) plus a margin when that is longer.
pub fn kubectl_limit(args: &[&str]) -> Duration {
    let own = args.iter().enumerate().find_map(|(i, a)| {
        let v = match a.strip_prefix("--timeout") {
            Some(rest) if rest.starts_with('=') => &rest[1..],
            Some("") => args.get(i + 1)?,
            _ => return None,
        };
        parse_go_duration(v)
    });
    match own {
        Some(d) => KUBECTL_LIMIT.max(d + OWN_TIMEOUT_MARGIN),
        None => KUBECTL_LIMIT,
    }
}

/// Whether kubectl with these arguments makes plain requests, which `--request-timeout`
/// may bound. Not for streams and waits (watch, logs -f, exec, attach, port-forward,
/// rollout status, wait, delete's wait for removal): the request timeout would cut a
/// legitimate long stream, so only the process bound applies to them.
pub fn plain_request(args: &[&str]) -> bool {
    let verb = verb(args);
    let not_plain = args.iter().any(|a| {
        a.starts_with("--request-timeout")
            || matches!(*a, "-w" | "--watch" | "--watch-only")
            || matches!(*a, "-f" | "--follow") && verb == Some("logs")
    });
    if not_plain {
        return false;
    }
    matches!(
        verb,
        Some(
            "get"
                | "describe"
                | "create"
                | "apply"
                | "patch"
                | "replace"
                | "label"
                | "annotate"
                | "scale"
                | "set"
                | "expose"
                | "autoscale"
                | "taint"
                | "cordon"
                | "uncordon"
                | "explain"
                | "api-resources"
                | "api-versions"
                | "version"
                | "cluster-info"
                | "logs"
                | "top"
                | "auth"
        )
    )
}

/// The kubectl verb: the first argument that is neither a flag nor a flag's value.
fn verb<'a>(args: &[&'a str]) -> Option<&'a str> {
    const WITH_VALUE: &[&str] = &[
        "-n",
        "--namespace",
        "--context",
        "--cluster",
        "--user",
        "-s",
        "--server",
        "--as",
        "--kubeconfig",
        "--cache-dir",
        "-v",
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(a) {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// `90s`, `2m`, `1m30s`, `500ms`, as kubectl's duration flags take them.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return None,
        };
        rest = &rest[unit..];
    }
    Some(total)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// SIGKILL to the child's whole process group (it leads one: see `process_group(0)`), then
/// reap the child. Not once it is reaped: its pid may belong to another process by then.
pub fn kill_group(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A pipe read to its end on a thread, into a buffer readable at any time.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Drain {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let thread = pipe.map(|mut pipe| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .expect("output buffer")
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Drain { buf, thread }
    }

    /// What was read, once the pipe ended or `grace` passed (a grandchild that escaped the
    /// process group may hold the pipe open).
    fn finish(mut self, grace: Duration) -> Vec<u8> {
        let deadline = Instant::now() + grace;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        std::mem::take(&mut *self.buf.lock().expect("output buffer"))
    }
}

/// The longest a stream a test reads (a watch, `logs -f`, a port-forward) may live.
pub const STREAM_LIMIT: Duration = Duration::from_secs(600);

/// A long-running child (a watch, `logs -f`, a port-forward): killed with its process group
/// when dropped, or by a watchdog when it outlives its bound, whichever comes first.
pub struct Supervised {
    child: Arc<Mutex<Child>>,
    expired: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with us: tells the watchdog to stop.
    _stop: std::sync::mpsc::Sender<()>,
    pub what: String,
    pub limit: Duration,
}

impl Supervised {
    /// Start `cmd` (its stdio as the caller set it) in its own process group.
    pub fn spawn(cmd: &mut Command, limit: Duration) -> Supervised {
        use std::sync::atomic::{AtomicBool, Ordering};
        let what = describe(cmd);
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let child = Arc::new(Mutex::new(child));
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        {
            let (child, expired) = (child.clone(), expired.clone());
            std::thread::spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit)
                {
                    // Under the lock: a child reaped by Drop meanwhile reports its status
                    // here, and is never killed by a pid that may have been reused.
                    let mut c = child.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(None) = c.try_wait() {
                        expired.store(true, Ordering::SeqCst);
                        kill_group(&mut c);
                    }
                }
            });
        }
        Supervised {
            child,
            expired,
            _stop: stop,
            what,
            limit,
        }
    }

    /// Work on the child (take a pipe, try_wait, …).
    pub fn with<R>(&self, f: impl FnOnce(&mut Child) -> R) -> R {
        f(&mut self.child.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the watchdog killed it for outliving its bound.
    pub fn expired(&self) -> bool {
        self.expired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How it ended, if it has: for messages.
    pub fn state(&self) -> String {
        if self.expired() {
            return format!(
                "{} was killed after its bound of {:?}",
                self.what, self.limit
            );
        }
        match self.with(|c| c.try_wait()) {
            Ok(Some(status)) => format!("{} exited: {status}", self.what),
            _ => format!("{} is still running", self.what),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        kill_group(&mut self.child.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
