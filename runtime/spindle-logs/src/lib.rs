//! Container log files in the CRI log format.
//!
//! This is the format containerd and CRI-O write and the kubelet reads for
//! `kubectl logs`: one record per line,
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F hello
//! ```
//!
//! that is `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <content>\n`.
//! Lines longer than [`MAX_RECORD_CONTENT`] are split into `P` (partial)
//! records followed by a final `F` record, so a reader never has to hold more
//! than one bounded record to make progress.
//!
//! * [`LogWriter`] writes the log of one run of one container to
//!   `<dir>/<restart>.log`, buffering output until a newline per stream and
//!   rotating to `<restart>.log.1`, `.2`, ... (higher is older).
//! * [`read`] turns those files back into what `kubectl logs` prints, with
//!   tail, since, timestamps, limit-bytes and follow (through a [`LiveLog`]
//!   handle of the writer, which also tells when the run is over).
//! * [`prune`] removes the logs of runs the kubelet would no longer show.

mod files;
mod reader;
mod record;
mod writer;

pub use files::prune;
pub use reader::read;
pub use record::{parse_record, ParseError, Record, MAX_RECORD_CONTENT};
pub use writer::{LiveLog, LogWriter};

use std::fmt;

/// The output stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name used in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Index into per-stream arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the log file of a run is rotated, and how many files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would make the current file larger than this.
    pub max_bytes: u64,
    /// Files kept in all, the current one included (at least 1).
    pub max_files: usize,
}

impl Default for Rotation {
    /// The kubelet's defaults for `containerLogMaxSize` and `containerLogMaxFiles`.
    fn default() -> Self {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// What [`read`] returns, as in `kubectl logs` (PodLogOptions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new records until the writer closes.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only records written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Prefix each line with the timestamp of its (first) record.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}
