//! Reading the log of one run the way `kubectl logs` shows it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::files::{log_path, open_all, Opened};
use crate::record::{format_timestamp, parse_record, Record};
use crate::writer::{LiveLog, Progress, Shared};
use crate::LogOptions;

/// Bytes read from a file at a time, and the size output chunks aim for.
const CHUNK: usize = 64 * 1024;
/// A partial line longer than this is passed on before its end arrives, so
/// a guest printing without newlines cannot make a reader buffer it all.
const MAX_JOINED: usize = 1024 * 1024;
/// A "record" longer than this when scanning backwards for `tail` is not
/// one of ours; the scan treats it as the beginning of the log.
const MAX_SCAN_LINE: usize = 1024 * 1024;

/// Reads the log of one run: `<dir>/<restart>.log` and its rotated files,
/// oldest first, as `kubectl logs` prints it.
///
/// Records tagged `P` are joined with the following record of the same
/// stream; each complete line ends in `\n`. With `timestamps` each line is
/// prefixed by the timestamp of its first record and a space, as the kubelet
/// does. `tail` keeps the last N lines, `since` drops records written
/// before that time, and `limit_bytes` ends the output after that many
/// bytes (prefixes included).
///
/// With `follow` and a `live` handle of the writer that is not closed yet,
/// the stream keeps going with new records, across rotations, until the
/// writer closes. Otherwise it ends at the end of the files.
///
/// A run without a file yet (or without even its directory: the writer makes
/// both at the first output) gives an empty stream; whether the run exists at all
/// is the caller's to know. File access runs on tokio's blocking pool,
/// so the stream has to be polled within a tokio runtime.
pub fn read(
    dir: &Path,
    restart: u32,
    opts: LogOptions,
    live: Option<LiveLog>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    enum St {
        Start(PathBuf, u32, LogOptions, Option<LiveLog>),
        Running(Box<Reader>),
        Done,
    }
    let start = St::Start(dir.to_path_buf(), restart, opts, live);
    futures::stream::unfold(start, |st| async move {
        let mut reader = match st {
            St::Done => return None,
            St::Running(reader) => reader,
            St::Start(dir, restart, opts, live) => {
                match blocking(move || Reader::open(dir, restart, opts, live)).await {
                    Ok(reader) => Box::new(reader),
                    Err(e) => return Some((Err(e), St::Done)),
                }
            }
        };
        loop {
            let (back, step) = match blocking(move || {
                let step = reader.step();
                Ok((reader, step))
            })
            .await
            {
                Ok(done) => done,
                Err(e) => return Some((Err(e), St::Done)),
            };
            reader = back;
            match step {
                Ok(Step::Data(data)) => return Some((Ok(data), St::Running(reader))),
                Ok(Step::End) => return None,
                Ok(Step::Wait) => reader.wait().await,
                Err(e) => return Some((Err(e), St::Done)),
            }
        }
    })
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

enum Step {
    Data(Bytes),
    /// At the end of the writer's current file: wait for a change.
    Wait,
    End,
}

/// Following a writer that was still open when reading started.
struct Follow {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    /// Generation of the newest file in `Reader::files`.
    gen: i64,
    /// The writer was seen closed; one more read to the end, then stop.
    closing: bool,
}

struct Reader {
    /// Files still to read, oldest first; the front one is being read.
    files: VecDeque<File>,
    /// Number of the front file, counting from the first one read.
    file_no: usize,
    /// Bytes read from the front file that do not yet form a whole record.
    buf: Vec<u8>,
    /// Offset of `buf` in the front file.
    buf_offset: u64,
    /// Per stream, records before this position belong to lines cut off
    /// by `tail`.
    skip_before: [Position; 2],
    /// Where reading the newest file stops when not following.
    end: Option<u64>,
    scratch: Vec<u8>,
    lines: Lines,
    follow: Option<Follow>,
    done: bool,
    path: PathBuf,
    warned: bool,
}

impl Reader {
    fn open(
        dir: PathBuf,
        restart: u32,
        opts: LogOptions,
        live: Option<LiveLog>,
    ) -> io::Result<Self> {
        let path = log_path(&dir, restart, 0);
        // Only a handle for this very run may stand in for its writer.
        let live = live.filter(|live| {
            let ours = live.shared.path == path;
            if !ours {
                tracing::warn!(
                    path = %path.display(),
                    live = %live.shared.path.display(),
                    "live log handle belongs to another file; not following"
                );
            }
            ours
        });
        let (opened, follow) = match live {
            // The writer's lock keeps rotation out while the files are
            // opened, and tells which generation the newest one is.
            Some(live) => {
                let (opened, gen, closed) = live.shared.open_all()?;
                let follow = (opts.follow && !closed).then(|| Follow {
                    changes: live.shared.subscribe(),
                    shared: live.shared,
                    gen,
                    closing: false,
                });
                (opened, follow)
            }
            None => (open_all(&dir, restart)?, None),
        };
        let mut files: Vec<File> = opened.into_iter().map(|Opened { file, .. }| file).collect();
        // A read that does not follow shows the log as it was when asked:
        // the tail is counted up to this length and reading stops there,
        // so lines written meanwhile do not make `tailLines=2` three lines.
        let newest_len = match files.last() {
            Some(file) => file.metadata()?.len(),
            None => 0,
        };
        let end = follow.is_none().then_some(newest_len);
        let mut buf_offset = 0;
        let mut skip_before = [(0, 0); 2];
        if let Some(tail) = opts.tail {
            let starts = tail_start(&mut files, newest_len, tail, opts.since)?;
            let (first, offset) = starts[0].min(starts[1]);
            files.drain(..first);
            // The scan moved every file's cursor.
            for (index, file) in files.iter_mut().enumerate() {
                file.seek(SeekFrom::Start(if index == 0 { offset } else { 0 }))?;
            }
            buf_offset = offset;
            skip_before = starts.map(|(index, offset)| (index - first, offset));
        }
        Ok(Reader {
            files: files.into(),
            file_no: 0,
            buf: Vec::new(),
            buf_offset,
            skip_before,
            end,
            scratch: vec![0; CHUNK],
            lines: Lines {
                pending: [None, None],
                since: opts.since,
                timestamps: opts.timestamps,
                remaining: opts.limit_bytes,
            },
            follow,
            done: opts.limit_bytes == Some(0),
            path,
            warned: false,
        })
    }

    /// Reads until there is a chunk of output, the log ends, or following
    /// has to wait for the writer.
    fn step(&mut self) -> io::Result<Step> {
        let mut out = Vec::new();
        loop {
            if self.done || out.len() >= CHUNK {
                return Ok(if !out.is_empty() {
                    Step::Data(out.into())
                } else {
                    Step::End
                });
            }
            let last = self.files.len() <= 1;
            if let (true, Some(follow)) = (last, self.follow.as_mut()) {
                // Marked before reading: a write after this point makes the
                // next wait return at once, so no record is slept through.
                follow.changes.borrow_and_update();
            }
            let want = match (last, self.end) {
                (true, Some(end)) => {
                    let at = self.buf_offset + self.buf.len() as u64;
                    usize::try_from(end.saturating_sub(at))
                        .unwrap_or(usize::MAX)
                        .min(self.scratch.len())
                }
                _ => self.scratch.len(),
            };
            let read = match self.files.front_mut() {
                Some(file) if want > 0 => file.read(&mut self.scratch[..want])?,
                _ => 0,
            };
            if read > 0 {
                self.buf.extend_from_slice(&self.scratch[..read]);
                self.parse(&mut out);
                continue;
            }
            if !last {
                // A torn record at the end of a rotated file (a crash
                // mid-write) will never be completed.
                self.buf.clear();
                self.files.pop_front();
                self.file_no += 1;
                self.buf_offset = 0;
                continue;
            }
            if let Some(follow) = self.follow.as_mut() {
                match follow.shared.progress(follow.gen)? {
                    Progress::Next(gen, file) => {
                        // The current file may still hold records written
                        // before the rotation; it is read to its end first.
                        follow.gen = gen;
                        self.files.push_back(file);
                    }
                    Progress::Same if out.is_empty() => return Ok(Step::Wait),
                    Progress::Same => return Ok(Step::Data(out.into())),
                    Progress::Closed if follow.closing => self.follow = None,
                    // Records may have been written between our last read
                    // and the close: one more read to the end.
                    Progress::Closed => follow.closing = true,
                }
                continue;
            }
            self.lines.finish(&mut out);
            self.done = true;
        }
    }

    /// Turns the whole records in `buf` into output.
    fn parse(&mut self, out: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(at) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + at];
            let position = (self.file_no, self.buf_offset + start as u64);
            start += at + 1;
            match parse_record(line) {
                Ok(record) if position < self.skip_before[record.stream.index()] => {}
                Ok(record) => {
                    if !self.lines.push(&record, out) {
                        self.done = true;
                        break;
                    }
                }
                Err(e) => {
                    // Like the kubelet: skip what is not a record. Once per
                    // reader, as a damaged file would say it for every line.
                    if !self.warned {
                        tracing::warn!(path = %self.path.display(), error = %e, "skipping malformed log line");
                        self.warned = true;
                    }
                }
            }
        }
        self.buf.drain(..start);
        self.buf_offset += start as u64;
    }

    async fn wait(&mut self) {
        if let Some(follow) = self.follow.as_mut() {
            if follow.changes.changed().await.is_err() {
                // The writer state is gone; nothing more can come.
                self.follow = None;
            }
        }
    }
}

/// A line of one stream being joined from partial records.
struct Joining {
    /// Timestamp for the prefix; None once the start has been passed on.
    timestamp: Option<DateTime<Utc>>,
    content: Vec<u8>,
}

/// Turns records into output lines, applying since, timestamps and
/// limit_bytes.
struct Lines {
    pending: [Option<Joining>; 2],
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl Lines {
    /// Returns false once the byte limit is reached.
    fn push(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> bool {
        if self.since.is_some_and(|since| record.timestamp < since) {
            return true;
        }
        // Joined per stream: a long stdout line may be split around stderr
        // records written meanwhile.
        let slot = &mut self.pending[record.stream.index()];
        let joining = slot.get_or_insert_with(|| Joining {
            timestamp: Some(record.timestamp),
            content: Vec::new(),
        });
        if record.partial && joining.content.len() + record.content.len() <= MAX_JOINED {
            joining.content.extend_from_slice(record.content);
            return true;
        }
        let Joining { timestamp, content } = std::mem::replace(
            joining,
            Joining {
                timestamp: None,
                content: Vec::new(),
            },
        );
        if !record.partial {
            *slot = None;
        }
        self.emit_prefix(timestamp, out)
            && self.emit(&content, out)
            && self.emit(record.content, out)
            && (record.partial || self.emit(b"\n", out))
    }

    /// Passes on lines whose end never came (the log ends with `P`).
    fn finish(&mut self, out: &mut Vec<u8>) {
        for index in 0..self.pending.len() {
            if let Some(Joining { timestamp, content }) = self.pending[index].take() {
                if !(self.emit_prefix(timestamp, out) && self.emit(&content, out)) {
                    return;
                }
            }
        }
    }

    fn emit_prefix(&mut self, timestamp: Option<DateTime<Utc>>, out: &mut Vec<u8>) -> bool {
        match timestamp {
            Some(ts) if self.timestamps => {
                let mut prefix = format_timestamp(&ts).into_bytes();
                prefix.push(b' ');
                self.emit(&prefix, out)
            }
            _ => true,
        }
    }

    /// Returns false once the byte limit is reached.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(remaining) = self.remaining.as_mut() else {
            out.extend_from_slice(bytes);
            return true;
        };
        let take = bytes
            .len()
            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
        out.extend_from_slice(&bytes[..take]);
        *remaining -= take as u64;
        *remaining > 0
    }
}

/// A place in the files being read: (index into the files, byte offset).
type Position = (usize, u64);

/// Where the last `tail` lines begin, per stream: records of a stream
/// before its position belong to earlier lines. Scans backwards from the
/// end of the newest file.
///
/// The lines taken are those whose `F` record (or a trailing `P` whose line
/// never ended) is among the last `tail`, which per stream is a run of its
/// latest lines; the position then moves back over their partial records
/// so no line is cut. Records before `since` end the scan, as timestamps
/// only grow within a run.
fn tail_start(
    files: &mut [File],
    newest_len: u64,
    tail: usize,
    since: Option<DateTime<Utc>>,
) -> io::Result<[Position; 2]> {
    let Some(newest) = files.len().checked_sub(1) else {
        return Ok([(0, 0); 2]);
    };
    // Nothing taken yet: a stream starts after everything there is now.
    let mut start = [(newest, newest_len); 2];
    let mut counted = 0;
    // Per stream: a line taken whose beginning is not found yet, and a
    // line not taken (everything before it in that stream is not either).
    let mut open = [false; 2];
    let mut closed = [false; 2];
    for index in (0..files.len()).rev() {
        let len = if index == newest {
            newest_len
        } else {
            files[index].metadata()?.len()
        };
        let mut lines = RevLines::new(&mut files[index], len);
        while let Some((offset, line)) = lines.next()? {
            if counted >= tail && !open[0] && !open[1] {
                return Ok(start);
            }
            let Ok(record) = parse_record(&line) else {
                continue;
            };
            if since.is_some_and(|since| record.timestamp < since) {
                return Ok(start);
            }
            let s = record.stream.index();
            if closed[s] {
                continue;
            }
            if record.partial && open[s] {
                start[s] = (index, offset);
                continue;
            }
            // An F, or a P ending the log: a line of its own. An F also
            // ends the open line of its stream, which began after it.
            open[s] = false;
            if counted < tail {
                counted += 1;
                open[s] = true;
                start[s] = (index, offset);
            } else {
                closed[s] = true;
            }
        }
        if lines.gave_up {
            return Ok(start);
        }
    }
    Ok(start)
}

/// Lines of a file from the end backwards, each with its offset. A last
/// line without newline (a record being written) is left out.
struct RevLines<'a> {
    file: &'a mut File,
    /// Offset of the first byte of `buf` in the file.
    pos: u64,
    buf: Vec<u8>,
    trimmed: bool,
    gave_up: bool,
}

impl<'a> RevLines<'a> {
    fn new(file: &'a mut File, len: u64) -> Self {
        RevLines {
            file,
            pos: len,
            buf: Vec::new(),
            trimmed: false,
            gave_up: false,
        }
    }

    fn next(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            if self.buf.len() > MAX_SCAN_LINE {
                self.gave_up = true;
                return Ok(None);
            }
            if !self.trimmed {
                if let Some(at) = self.buf.iter().rposition(|&b| b == b'\n') {
                    self.buf.truncate(at + 1);
                    self.trimmed = true;
                } else if self.pos == 0 {
                    return Ok(None);
                } else {
                    self.fill()?;
                }
                continue;
            }
            // From here on `buf` ends with the newline of the line to return.
            let Some((_, body)) = self.buf.split_last() else {
                if self.pos == 0 {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            };
            match body.iter().rposition(|&b| b == b'\n') {
                Some(at) => {
                    let line = body[at + 1..].to_vec();
                    self.buf.truncate(at + 1);
                    return Ok(Some((self.pos + at as u64 + 1, line)));
                }
                None if self.pos == 0 => {
                    let line = body.to_vec();
                    self.buf.clear();
                    return Ok(Some((0, line)));
                }
                None => self.fill()?,
            }
        }
    }

    /// Prepends the block before `pos`.
    fn fill(&mut self) -> io::Result<()> {
        let size = self.pos.min(CHUNK as u64);
        self.pos -= size;
        let mut block = vec![0; size as usize];
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut block)?;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rev_lines(content: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(content).expect("write");
        let mut lines = RevLines::new(&mut file, content.len() as u64);
        let mut all = Vec::new();
        while let Some(line) = lines.next().expect("read") {
            all.push(line);
        }
        all
    }

    #[test]
    fn reverse_lines() {
        assert_eq!(
            rev_lines(b"a\nbb\n\nccc\ntorn"),
            vec![
                (6, b"ccc".to_vec()),
                (5, b"".to_vec()),
                (2, b"bb".to_vec()),
                (0, b"a".to_vec())
            ]
        );
        assert!(rev_lines(b"torn").is_empty());
        assert!(rev_lines(b"").is_empty());
        let long = vec![b'x'; 3 * CHUNK];
        let mut content = long.clone();
        content.push(b'\n');
        content.extend_from_slice(b"y\n");
        assert_eq!(
            rev_lines(&content),
            vec![(3 * CHUNK as u64 + 1, b"y".to_vec()), (0, long)]
        );
    }

    /// Drains a reader opened before `append` ran.
    fn read_after(opts: LogOptions, append: impl FnOnce(&Path)) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            crate::LogWriter::create(dir.path(), 0, crate::Rotation::default()).expect("writer");
        for i in 0..10 {
            log.write(crate::Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        let mut reader = Reader::open(dir.path().to_path_buf(), 0, opts, None).expect("open");
        append(&log_path(dir.path(), 0, 0));
        let mut out = Vec::new();
        loop {
            match reader.step().expect("step") {
                Step::Data(data) => out.extend_from_slice(&data),
                Step::End => break,
                Step::Wait => panic!("a reader that does not follow never waits"),
            }
        }
        log.close();
        String::from_utf8(out).expect("utf-8")
    }

    fn append_record(path: &Path) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open log");
        file.write_all(b"2099-01-01T00:00:00.000000000Z stdout F late\n")
            .expect("append");
    }

    #[test]
    fn a_read_that_does_not_follow_stops_where_the_log_ended() {
        let tail = LogOptions {
            tail: Some(2),
            ..LogOptions::default()
        };
        assert_eq!(read_after(tail, append_record), "line 8\nline 9\n");
        let all = read_after(LogOptions::default(), append_record);
        assert!(all.ends_with("line 9\n"), "{all:?}");
        assert_eq!(all.lines().count(), 10, "{all:?}");
    }
}
