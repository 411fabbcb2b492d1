//! File naming: `<restart>.log` is the current file of a run, `<restart>.log.N`
//! its rotated files, higher N older.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Path of the file with rotation index `index` (0 = current).
pub(crate) fn log_path(dir: &Path, restart: u32, index: usize) -> PathBuf {
    if index == 0 {
        dir.join(format!("{restart}.log"))
    } else {
        dir.join(format!("{restart}.log.{index}"))
    }
}

/// Splits a file name into (restart, rotation index), None if it is not ours.
fn parse_name(name: &str) -> Option<(u32, usize)> {
    let (restart, rest) = name.split_once(".log")?;
    let restart = restart.parse().ok()?;
    if rest.is_empty() {
        return Some((restart, 0));
    }
    let index: usize = rest.strip_prefix('.')?.parse().ok()?;
    // "1.log.0" is nobody's name; treating it as the current file would
    // read it twice.
    (index > 0).then_some((restart, index))
}

/// Rotation indexes present for one run, ascending (newest first).
pub(crate) fn list_indexes(dir: &Path, restart: u32) -> io::Result<Vec<usize>> {
    let mut found = Vec::new();
    // No directory yet: the run has printed nothing (the writer makes it lazily).
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some((r, index)) = entry.file_name().to_str().and_then(parse_name) {
            if r == restart {
                found.push(index);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Identity of an open file, to notice that two names led to the same file.
#[cfg(unix)]
fn identity(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_file: &File) -> Option<(u64, u64)> {
    None
}

/// One opened file of a run.
pub(crate) struct Opened {
    pub file: File,
    /// Rotation index when it was opened.
    pub index: usize,
}

/// Opens every file of one run, returned oldest first.
///
/// The writer may rotate meanwhile, which only ever moves files to higher
/// indexes. Opening newest first therefore can meet a file a second time
/// (under its next name) but never skips one that is still kept, and the
/// duplicates are recognised by their inode.
pub(crate) fn open_all(dir: &Path, restart: u32) -> io::Result<Vec<Opened>> {
    let mut seen = Vec::new();
    let mut opened = Vec::new();
    for index in list_indexes(dir, restart)? {
        let file = match File::open(log_path(dir, restart, index)) {
            Ok(file) => file,
            // Removed by a rotation since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(id) = identity(&file) {
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
        }
        opened.push(Opened { file, index });
    }
    opened.reverse();
    Ok(opened)
}

/// Removes the log files of runs before `keep_from_restart`.
///
/// The kubelet keeps the current and the previous run (for
/// `kubectl logs --previous`), so callers pass the restart count of the
/// previous run. A missing directory has nothing to prune.
pub fn prune(dir: &Path, keep_from_restart: u32) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some((restart, _)) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        if restart < keep_from_restart {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("3.log"), Some((3, 0)));
        assert_eq!(parse_name("3.log.12"), Some((3, 12)));
        assert_eq!(parse_name("3.log.0"), None);
        assert_eq!(parse_name("3.log.x"), None);
        assert_eq!(parse_name("3.logx"), None);
        assert_eq!(parse_name("a.log"), None);
        assert_eq!(parse_name("3.txt"), None);
        let dir = Path::new("/d");
        assert_eq!(log_path(dir, 2, 0), Path::new("/d/2.log"));
        assert_eq!(log_path(dir, 2, 3), Path::new("/d/2.log.3"));
    }
}
