//! A process's stdio as FIFOs, the way containerd clients hand stdio to a shim: the
//! agent creates the FIFOs, opens its ends, and passes the paths in the task or exec
//! request; the shim opens the other ends.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::{Error, Result};

/// Receives output as it is read: (is_stderr, bytes). The pump reads no more until the
/// returned future is over, so a sink whose reader is slow fills the FIFO and the
/// process's writes block, as they would on the kubelet's pipes.
pub type Sink = Arc<dyn Fn(bool, Vec<u8>) -> BoxFuture<'static, ()> + Send + Sync>;

/// How long the output may stay silent after the process exited before the pump gives
/// up: a child that inherited the process's stdout keeps the FIFO open.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// The FIFOs of one process, removed on drop.
pub struct Fifos {
    dir: PathBuf,
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    /// None with a TTY: the terminal merges both streams into stdout.
    pub stderr: Option<PathBuf>,
}

fn mkfifo(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("bad FIFO path {}", path.display())))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(Error::Io(
            format!("creating FIFO {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl Fifos {
    /// Creates the FIFOs in a fresh directory `dir`.
    pub fn create(dir: &Path, stdin: bool, tty: bool) -> Result<Fifos> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("creating {}", dir.display()), e))?;
        let fifos = Fifos {
            dir: dir.to_path_buf(),
            stdin: stdin.then(|| dir.join("stdin")),
            stdout: dir.join("stdout"),
            stderr: (!tty).then(|| dir.join("stderr")),
        };
        for p in fifos
            .stdin
            .iter()
            .chain([&fifos.stdout])
            .chain(fifos.stderr.iter())
        {
            mkfifo(p)?;
        }
        Ok(fifos)
    }

    pub fn path_str(p: Option<&PathBuf>) -> String {
        p.map(|p| p.display().to_string()).unwrap_or_default()
    }

    /// Opens the read ends and copies what arrives to `sink` until the shim closes
    /// them. Must be called before the task or exec is created: the shim's open for
    /// writing waits for a reader.
    pub fn pump(&self, sink: Sink) -> Result<Pump> {
        let mut tasks = Vec::new();
        let (exited, exit) = watch::channel(false);
        for (path, is_err) in [(Some(&self.stdout), false), (self.stderr.as_ref(), true)] {
            let Some(path) = path else { continue };
            let rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(|e| Error::Io(format!("opening {}", path.display()), e))?;
            tasks.push(tokio::spawn(copy_out(
                rx,
                is_err,
                sink.clone(),
                exit.clone(),
            )));
        }
        Ok(Pump { tasks, exited })
    }

    /// Opens the write end of stdin, if the process has one.
    pub fn stdin_writer(&self) -> Result<Option<pipe::Sender>> {
        let Some(path) = &self.stdin else {
            return Ok(None);
        };
        // Read-write so the open cannot fail for want of a reader; closing it is the
        // only writer going away, which the shim sees as end of input.
        pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .map(Some)
            .map_err(|e| Error::Io(format!("opening {}", path.display()), e))
    }

    /// Opens the write end of stdin (after the shim opened its end) and copies `input`
    /// into it; the returned task ends when `input` does.
    pub fn feed(
        &self,
        mut input: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(mut tx) = self.stdin_writer()? else {
            return Ok(None);
        };
        Ok(Some(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })))
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies one FIFO to `sink` until its end, or until it stays silent for
/// [`DRAIN_IDLE`] once `exit` says the process exited. Time spent waiting on the sink
/// does not count: what the process wrote before it exited is all delivered, however
/// slowly the reader takes it.
async fn copy_out(
    mut rx: pipe::Receiver,
    is_err: bool,
    sink: Sink,
    mut exit: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 << 10];
    let mut exited = false;
    loop {
        let read = if exited {
            match tokio::time::timeout(DRAIN_IDLE, rx.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = rx.read(&mut buf) => r,
                // Then read again, bounded. A dropped Pump counts as an exit.
                changed = exit.changed() => {
                    exited = changed.is_err() || *exit.borrow();
                    continue;
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => sink(is_err, buf[..n].to_vec()).await,
        }
    }
}

/// The copy tasks of a process's output.
pub struct Pump {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    exited: watch::Sender<bool>,
}

impl Pump {
    /// Waits for the output to end after the process exited. A process that left a
    /// child holding its stdout would keep the FIFO open, so the copy gives up once the
    /// output is silent for a moment, as containerd's own clients do.
    pub async fn finish(self) {
        self.exited.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
