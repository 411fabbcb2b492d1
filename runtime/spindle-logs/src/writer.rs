//! Writing the log of one run, with rotation.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::files::{list_indexes, log_path, Opened};
use crate::record::{encode, MAX_RECORD_CONTENT};
use crate::{Rotation, Stream};

/// Encoded records held back before writing them in one go.
const MAX_BATCH: usize = 256 * 1024;

/// State shared by the clones of a writer and its [`LiveLog`] handles.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) restart: u32,
    pub(crate) path: PathBuf,
    pub(crate) rotation: Rotation,
    state: Mutex<State>,
    /// Bumped after every write, rotation and close, so followers wake up.
    changes: watch::Sender<u64>,
}

struct State {
    /// None after close, or when reopening after a rotation failed.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// Output of each stream after its last newline.
    pending: [Vec<u8>; 2],
    closed: bool,
    last_timestamp: Option<DateTime<Utc>>,
    /// Rotations so far; the current file is generation `rotations`, the
    /// file with index i is generation `rotations - i`. Followers use it to
    /// find the file that came after the one they were reading.
    rotations: i64,
    /// Records encoded but not yet written: one write() call with many lines
    /// costs one system call, while each record still lies whole inside a
    /// single write_all.
    batch: Vec<u8>,
    /// Set after an I/O error was logged, so a full disk logs once and not
    /// once per line the guest prints.
    failing: bool,
}

/// What a follower learns from the writer at the end of its file.
pub(crate) enum Progress {
    /// Nothing new: wait for a change.
    Same,
    /// The file after generation `gen` (its generation and file).
    Next(i64, File),
    /// The writer was closed and its file has been read completely.
    Closed,
}

/// Writer for one run of one container.
///
/// The file is `<dir>/<restart>.log`, rotated to `<restart>.log.1`, `.2`,
/// ... (higher is older), keeping `max_files` in all. Cheap to clone; all
/// clones write the same file. The run's log is closed by [`close`] or when
/// the last clone is dropped.
///
/// [`close`]: LogWriter::close
#[derive(Clone)]
pub struct LogWriter {
    handle: Arc<Handle>,
}

/// Owned by the writer clones only (not by [`LiveLog`]s), so that dropping
/// the last writer ends followers even without an explicit close.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Handle for followers of a run's log: notified on each write, rotation
/// and on close.
#[derive(Clone)]
pub struct LiveLog {
    pub(crate) shared: Arc<Shared>,
}

impl LogWriter {
    /// The log of run `restart` in `dir`. The directory and file are made at the
    /// first output (or when a follower asks), not here: most short-lived containers
    /// print nothing, and on a node starting hundreds of pods a second, making two
    /// directories and a file per container cost more CPU than running a Wasm
    /// container (measured with perf: ext4 inode allocation). A reader of a run without
    /// a file sees an empty log. An existing file (from before an agent restart) is
    /// appended to.
    pub fn create(dir: &Path, restart: u32, rotation: Rotation) -> io::Result<Self> {
        let path = log_path(dir, restart, 0);
        // What an earlier run of the agent wrote counts towards rotation (a stat costs
        // no inode).
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        let rotation = Rotation {
            max_bytes: rotation.max_bytes,
            max_files: rotation.max_files.max(1),
        };
        let shared = Shared {
            dir: dir.to_path_buf(),
            restart,
            path,
            rotation,
            state: Mutex::new(State {
                file: None,
                size,
                pending: [Vec::new(), Vec::new()],
                closed: false,
                last_timestamp: None,
                rotations: 0,
                batch: Vec::new(),
                failing: false,
            }),
            changes: watch::Sender::new(0),
        };
        Ok(LogWriter {
            handle: Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        })
    }

    /// Appends output of the container. Complete lines are written at once;
    /// the rest waits for its newline (or for [`close`](LogWriter::close)).
    /// Errors are logged, never returned: the guest's output must not fail
    /// because its log cannot be written.
    pub fn write(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let shared = &self.handle.shared;
        let changed = {
            let mut state = shared.lock();
            if state.closed {
                tracing::debug!(path = %shared.path.display(), "log write after close dropped");
                return;
            }
            let before = (state.rotations, state.size);
            let mut pending = std::mem::take(&mut state.pending[stream.index()]);
            pending.extend_from_slice(data);
            let consumed = split_lines(&pending, false, |partial, content| {
                state.push(shared, partial, stream, content)
            });
            pending.drain(..consumed);
            state.pending[stream.index()] = pending;
            state.flush(shared);
            (state.rotations, state.size) != before
        };
        // Output still waiting for its newline is nothing followers can read.
        if changed {
            shared.notify();
        }
    }

    /// Writes what is left of unterminated lines and closes the file.
    /// Followers read to the end and then finish. Later writes are dropped.
    pub fn close(&self) {
        self.handle.shared.close();
    }

    /// The current file of this run.
    pub fn path(&self) -> &Path {
        &self.handle.shared.path
    }

    /// A handle for followers of this log.
    pub fn live(&self) -> LiveLog {
        LiveLog {
            shared: self.handle.shared.clone(),
        }
    }
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.handle.shared.path)
            .finish_non_exhaustive()
    }
}

impl LiveLog {
    /// Whether the writer has been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The current file of the run this handle follows.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl fmt::Debug for LiveLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveLog")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a torn record behind
        // (each record is one write_all), so the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn close(&self) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            for stream in [Stream::Stdout, Stream::Stderr] {
                let pending = std::mem::take(&mut state.pending[stream.index()]);
                if !pending.is_empty() {
                    split_lines(&pending, true, |partial, content| {
                        state.push(self, partial, stream, content)
                    });
                }
            }
            state.flush(self);
            state.closed = true;
            state.file = None;
        }
        self.notify();
    }

    /// Opens every file of the run while no rotation can happen, with the
    /// generation of the newest one. Also tells whether the writer is closed.
    pub(crate) fn open_all(&self) -> io::Result<(Vec<Opened>, i64, bool)> {
        let mut state = self.lock();
        // A follower needs the current file to exist, to follow it from the start.
        if !state.closed && state.file.is_none() {
            state.open_current(self)?;
        }
        let files = crate::files::open_all(&self.dir, self.restart)?;
        let newest = files.last().map(|f| f.index).unwrap_or(0);
        // An absent current file is treated as an empty generation before
        // the writer's, so the follower goes on to the writer's file.
        let gen = if files.is_empty() {
            state.rotations - 1
        } else {
            state.rotations - newest as i64
        };
        Ok((files, gen, state.closed))
    }

    /// Called by a follower at the end of the file of generation `gen`.
    pub(crate) fn progress(&self, gen: i64) -> io::Result<Progress> {
        let state = self.lock();
        if state.rotations == gen {
            return Ok(if state.closed {
                Progress::Closed
            } else {
                Progress::Same
            });
        }
        // The next generation is at this index, unless it has been rotated
        // away already (a slow follower); then the oldest file still kept
        // comes next. The lock keeps the names still while we open.
        let wanted = (state.rotations - gen - 1).max(0) as usize;
        let start = wanted.min(self.rotation.max_files - 1);
        for index in (0..=start).rev() {
            match File::open(log_path(&self.dir, self.restart, index)) {
                Ok(file) => {
                    if index < wanted {
                        tracing::warn!(
                            path = %self.path.display(),
                            "log follower fell behind rotation; some records were skipped"
                        );
                    }
                    return Ok(Progress::Next(state.rotations - index as i64, file));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("log file {} disappeared", self.path.display()),
        ))
    }
}

impl State {
    /// Adds one record to the batch, rotating first if it would make the
    /// current file larger than allowed. A record larger than the limit on
    /// its own still goes into a fresh file rather than being dropped.
    fn push(&mut self, shared: &Shared, partial: bool, stream: Stream, content: &[u8]) {
        let ts = self.next_timestamp();
        let start = self.batch.len();
        encode(&mut self.batch, &ts, stream, partial, content);
        let used = self.size + start as u64;
        if used > 0 && used + (self.batch.len() - start) as u64 > shared.rotation.max_bytes {
            let earlier = self.batch.drain(..start).collect::<Vec<_>>();
            self.write_out(shared, &earlier);
            self.rotate(shared);
        } else if self.batch.len() >= MAX_BATCH {
            // A guest printing megabytes at once should not need as much
            // memory again here.
            self.flush(shared);
        }
    }

    /// Writes the batch of records.
    fn flush(&mut self, shared: &Shared) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.write_out(shared, &batch);
        // Keep the allocation for the next write.
        self.batch = batch;
        self.batch.clear();
    }

    fn write_out(&mut self, shared: &Shared, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.file.is_none() {
            // The first output of the run, or a failed rotation left no file: try
            // again rather than losing the rest of the run's output.
            if let Err(e) = self.open_current(shared) {
                return self.failed(shared, "open", &e);
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                self.failing = false;
            }
            Err(e) => self.failed(shared, "write", &e),
        }
    }

    /// Opens (creating it and its directory) the run's current file.
    fn open_current(&mut self, shared: &Shared) -> io::Result<()> {
        fs::create_dir_all(&shared.dir)?;
        let file = open_append(&shared.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn failed(&mut self, shared: &Shared, what: &str, e: &io::Error) {
        if !self.failing {
            tracing::warn!(path = %shared.path.display(), error = %e, "cannot {what} container log");
            self.failing = true;
        }
    }

    /// Shifts `.log.N` to `.log.N+1`, dropping what no longer fits in
    /// `max_files`, and starts a new current file.
    fn rotate(&mut self, shared: &Shared) {
        let max_files = shared.rotation.max_files;
        let (dir, restart) = (&shared.dir, shared.restart);
        // Files at or beyond the last kept index, including leftovers from a
        // run with a larger max_files, would otherwise be kept forever.
        match list_indexes(dir, restart) {
            Ok(indexes) => {
                for index in indexes.into_iter().filter(|&i| i > 0 && i + 1 >= max_files) {
                    remove_if_exists(&log_path(dir, restart, index));
                }
            }
            Err(e) => self.failed(shared, "list", &e),
        }
        for index in (1..max_files.saturating_sub(1)).rev() {
            let from = log_path(dir, restart, index);
            match fs::rename(&from, log_path(dir, restart, index + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.failed(shared, "rotate", &e),
            }
        }
        let moved = if max_files > 1 {
            fs::rename(&shared.path, log_path(dir, restart, 1))
        } else {
            fs::remove_file(&shared.path)
        };
        if let Err(e) = moved {
            // Keep appending to the current file; the next record retries.
            return self.failed(shared, "rotate", &e);
        }
        self.rotations += 1;
        self.size = 0;
        self.file = None;
        match open_append(&shared.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => self.failed(shared, "open", &e),
        }
    }

    fn next_timestamp(&mut self) -> DateTime<Utc> {
        // Strictly increasing within a run even if the clock steps back or
        // two records fall in the same nanosecond, so readers can order and
        // filter by time.
        let mut now = Utc::now();
        if let Some(last) = self.last_timestamp {
            if now <= last {
                now = last + chrono::Duration::nanoseconds(1);
            }
        }
        self.last_timestamp = Some(now);
        now
    }
}

/// Calls `emit(partial, content)` for every record in `buf` and returns how
/// many bytes were consumed. Complete lines end in an `F` record; with
/// `finish` so does the unterminated rest. Otherwise the rest is kept for
/// later, except that full-size partial records are cut from it so the
/// buffer stays bounded.
fn split_lines(buf: &[u8], finish: bool, mut emit: impl FnMut(bool, &[u8])) -> usize {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], start + at + 1),
            None if finish && !rest.is_empty() => (rest, buf.len()),
            None => {
                // Strictly more than one record's worth: a line of exactly
                // MAX_RECORD_CONTENT bytes then still ends in a full F.
                let mut cut = 0;
                while rest.len() - cut > MAX_RECORD_CONTENT {
                    emit(true, &rest[cut..cut + MAX_RECORD_CONTENT]);
                    cut += MAX_RECORD_CONTENT;
                }
                return start + cut;
            }
        };
        let mut cut = 0;
        while line.len() - cut > MAX_RECORD_CONTENT {
            emit(true, &line[cut..cut + MAX_RECORD_CONTENT]);
            cut += MAX_RECORD_CONTENT;
        }
        emit(false, &line[cut..]);
        start = next;
        if start == buf.len() {
            return start;
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_exists(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove rotated log"),
    }
}
