//! A process's stdio as FIFOs, the way containerd clients hand stdio to a shim: the
//! agent creates the FIFOs, opens its ends, and passes the paths in the task or exec
//! request; the shim opens the other ends.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::{Error, Result};

/// Receives output as it is read: (is_stderr, bytes).
pub type Sink = Arc<dyn Fn(bool, &[u8]) + Send + Sync>;

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
        for (path, is_err) in [(Some(&self.stdout), false), (self.stderr.as_ref(), true)] {
            let Some(path) = path else { continue };
            let mut rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(|e| Error::Io(format!("opening {}", path.display()), e))?;
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sink(is_err, &buf[..n]),
                    }
                }
            }));
        }
        Ok(Pump { tasks })
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

/// The copy tasks of a process's output.
pub struct Pump {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pump {
    /// Waits for the output to end after the process exited. A process that left a
    /// child holding its stdout would keep the FIFO open, so this gives up after a
    /// moment, as containerd's own clients do.
    pub async fn finish(self) {
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
