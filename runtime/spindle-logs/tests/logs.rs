//! Writing and reading logs through the public API.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use spindle_logs::{
    parse_record, prune, read, LiveLog, LogOptions, LogWriter, Rotation, Stream, MAX_RECORD_CONTENT,
};

fn writer(dir: &Path, rotation: Rotation) -> LogWriter {
    LogWriter::create(dir, 0, rotation).expect("create writer")
}

async fn read_all(dir: &Path, opts: LogOptions, live: Option<LiveLog>) -> String {
    let mut stream = Box::pin(read(dir, 0, opts, live));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("read chunk"));
    }
    String::from_utf8(out).expect("utf-8 output")
}

/// All records of one file, as (timestamp, stream, partial, content).
fn records(path: &Path) -> Vec<(DateTime<Utc>, Stream, bool, Vec<u8>)> {
    let text = std::fs::read(path).expect("read log file");
    assert!(text.is_empty() || text.ends_with(b"\n"));
    text.split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let r = parse_record(line).expect("valid record");
            (r.timestamp, r.stream, r.partial, r.content.to_vec())
        })
        .collect()
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test]
async fn record_format_and_monotonic_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    assert_eq!(log.path(), dir.path().join("0.log"));
    for i in 0..100 {
        log.write(Stream::Stdout, format!("{i}\n").as_bytes());
    }
    log.close();
    let text = std::fs::read_to_string(log.path()).expect("read");
    let first = text.lines().next().expect("a line");
    // 2016-10-06T00:17:09.669794202Z stdout F 0
    let (ts, rest) = first.split_once(' ').expect("fields");
    assert_eq!(ts.len(), 30, "fixed nanosecond timestamp: {ts}");
    assert!(ts.ends_with('Z'));
    assert_eq!(rest, "stdout F 0");
    let recs = records(log.path());
    assert_eq!(recs.len(), 100);
    for pair in recs.windows(2) {
        assert!(pair[0].0 < pair[1].0, "timestamps strictly increase");
    }
    let age = Utc::now() - recs[0].0;
    assert!(age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60));
}

#[tokio::test]
async fn partial_lines_across_writes_and_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    log.write(Stream::Stdout, b"hel");
    log.write(Stream::Stderr, b"err");
    log.write(Stream::Stdout, b"lo\nwor");
    assert_eq!(records(log.path()).len(), 1, "only complete lines written");
    log.write(Stream::Stderr, b"or\n");
    log.write(Stream::Stdout, b"ld\n\nno newline");
    log.close();
    log.write(Stream::Stdout, b"after close\n");
    let recs: Vec<_> = records(log.path())
        .into_iter()
        .map(|(_, s, p, c)| (s, p, String::from_utf8(c).expect("utf-8")))
        .collect();
    assert_eq!(
        recs,
        vec![
            (Stream::Stdout, false, "hello".into()),
            (Stream::Stderr, false, "error".into()),
            (Stream::Stdout, false, "world".into()),
            (Stream::Stdout, false, "".into()),
            (Stream::Stdout, false, "no newline".into()),
        ]
    );
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    assert_eq!(out, "hello\nerror\nworld\n\nno newline\n");
}

#[tokio::test]
async fn long_lines_split_and_joined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    let long: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let exact = "x".repeat(MAX_RECORD_CONTENT);
    // Written in pieces, interleaved with stderr lines.
    log.write(Stream::Stdout, &long.as_bytes()[..20_000]);
    log.write(Stream::Stderr, b"between\n");
    log.write(Stream::Stdout, &long.as_bytes()[20_000..]);
    log.write(Stream::Stdout, b"\n");
    log.write(Stream::Stdout, format!("{exact}\n").as_bytes());
    log.close();
    let recs = records(log.path());
    let tags: Vec<_> = recs.iter().map(|r| (r.1, r.2, r.3.len())).collect();
    assert_eq!(
        tags,
        vec![
            (Stream::Stdout, true, MAX_RECORD_CONTENT),
            (Stream::Stderr, false, 7),
            (Stream::Stdout, true, MAX_RECORD_CONTENT),
            (Stream::Stdout, false, 40_000 - 2 * MAX_RECORD_CONTENT),
            (Stream::Stdout, false, MAX_RECORD_CONTENT),
        ]
    );
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    let lens: Vec<_> = out.split('\n').map(str::len).collect();
    assert_eq!(lens, vec![7, 40_000, MAX_RECORD_CONTENT, 0]);
    assert!(out == format!("between\n{long}\n{exact}\n"));
    // The joined line gets the timestamp of its first record.
    let stamped = read_all(
        dir.path(),
        LogOptions {
            timestamps: true,
            ..Default::default()
        },
        None,
    )
    .await;
    let lines: Vec<_> = stamped.lines().collect();
    assert_eq!(lines.len(), 3);
    let first_ts = recs[0]
        .0
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    assert_eq!(lines[1], format!("{first_ts} {long}"));
    // tail 1 / 2 take whole joined lines.
    let tail = |n| LogOptions {
        tail: Some(n),
        ..Default::default()
    };
    assert_eq!(
        read_all(dir.path(), tail(1), None).await,
        format!("{exact}\n")
    );
    assert!(read_all(dir.path(), tail(2), None).await == format!("{long}\n{exact}\n"));
    // The stderr line sits between the records of the long line.
    assert!(read_all(dir.path(), tail(3), None).await == out);
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        log.write(stream, format!("{i}\n").as_bytes());
    }
    log.close();
    let streams: Vec<_> = records(log.path()).iter().map(|r| r.1).collect();
    assert_eq!(streams[0], Stream::Stdout);
    assert_eq!(streams[1], Stream::Stderr);
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    assert_eq!(out, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
}

#[tokio::test]
async fn rotation_keeps_max_files_and_reads_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rotation = Rotation {
        max_bytes: 1000,
        max_files: 3,
    };
    let log = writer(dir.path(), rotation);
    for i in 0..200 {
        log.write(Stream::Stdout, format!("line {i}\n").as_bytes());
    }
    log.close();
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["0.log", "0.log.1", "0.log.2"]);
    for name in &names {
        let size = std::fs::metadata(dir.path().join(name))
            .expect("stat")
            .len();
        assert!(size <= 1000, "{name} is {size} bytes");
    }
    let kept: usize = names
        .iter()
        .map(|n| records(&dir.path().join(n)).len())
        .sum();
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    assert_eq!(out, numbered(200 - kept, 200));
    assert!(kept > 40 && kept < 100, "kept {kept}");
    // The oldest file's content comes first.
    let oldest = records(&dir.path().join("0.log.2"));
    assert_eq!(oldest[0].3, format!("line {}", 200 - kept).into_bytes());
    // tail across file boundaries.
    let out = read_all(
        dir.path(),
        LogOptions {
            tail: Some(kept - 1),
            ..Default::default()
        },
        None,
    )
    .await;
    assert_eq!(out, numbered(200 - kept + 1, 200));
}

#[tokio::test]
async fn tail_since_timestamps_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    log.write(Stream::Stdout, numbered(0, 5).as_bytes());
    std::thread::sleep(Duration::from_millis(20));
    let middle = Utc::now();
    log.write(Stream::Stdout, numbered(5, 10).as_bytes());
    let dir = dir.path();
    let opts = |f: fn(&mut LogOptions)| {
        let mut o = LogOptions::default();
        f(&mut o);
        o
    };
    assert_eq!(
        read_all(dir, opts(|o| o.tail = Some(3)), None).await,
        numbered(7, 10)
    );
    assert_eq!(read_all(dir, opts(|o| o.tail = Some(0)), None).await, "");
    assert_eq!(
        read_all(dir, opts(|o| o.tail = Some(50)), None).await,
        numbered(0, 10)
    );
    let since = LogOptions {
        since: Some(middle),
        ..Default::default()
    };
    assert_eq!(read_all(dir, since.clone(), None).await, numbered(5, 10));
    let since_tail = LogOptions {
        tail: Some(7),
        ..since
    };
    assert_eq!(read_all(dir, since_tail, None).await, numbered(5, 10));
    let limited = opts(|o| o.limit_bytes = Some(10));
    assert_eq!(read_all(dir, limited, None).await, "line 0\nlin");
    let stamped = read_all(dir, opts(|o| o.timestamps = true), None).await;
    let recs = records(&dir.join("0.log"));
    for (line, rec) in stamped.lines().zip(&recs) {
        let (ts, content) = line.split_once(' ').expect("prefix");
        assert_eq!(ts.parse::<DateTime<Utc>>().expect("timestamp"), rec.0);
        assert_eq!(content.as_bytes(), &rec.3[..]);
    }
    assert_eq!(stamped.lines().count(), 10);
    // limit_bytes counts the prefixes too.
    let both = opts(|o| {
        o.timestamps = true;
        o.limit_bytes = Some(35);
    });
    let out = read_all(dir, both, None).await;
    assert_eq!(out.len(), 35);
    assert!(out.ends_with(" line"), "{out}");
}

#[tokio::test]
async fn missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(read_all(dir.path(), LogOptions::default(), None).await, "");
    // The writer makes the directory at the first output: until then a run reads as
    // empty, as a silent container's log does.
    let gone = dir.path().join("gone");
    assert_eq!(read_all(&gone, LogOptions::default(), None).await, "");
}

#[tokio::test]
async fn a_silent_run_makes_no_file_and_a_follower_still_sees_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("main");
    let log = writer(&logs, Rotation::default());
    assert!(!logs.exists(), "nothing printed, nothing made");
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = Box::pin(read(&logs, 0, follow, Some(log.live())));
    log.write(Stream::Stdout, b"first words\n");
    log.close();
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        out.push_str(std::str::from_utf8(&chunk.expect("read")).expect("utf-8"));
    }
    assert_eq!(out, "first words\n");
    assert!(logs.join("0.log").exists());
}

#[tokio::test]
async fn follow_sees_new_lines_and_ends_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    log.write(Stream::Stdout, b"before\n");
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = Box::pin(read(dir.path(), 0, follow.clone(), Some(log.live())));
    let first = stream.next().await.expect("chunk").expect("ok");
    assert_eq!(&first[..], b"before\n");
    // Nothing more yet: the follower waits.
    let waiting = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(waiting.is_err(), "follower should wait for new lines");
    let writer_log = log.clone();
    let writing = std::thread::spawn(move || {
        for i in 0..50 {
            writer_log.write(Stream::Stdout, format!("line {i}\n").as_bytes());
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        writer_log.write(Stream::Stderr, b"unterminated");
        writer_log.close();
    });
    let mut out = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
    })
    .await;
    assert!(collected.is_ok(), "follow ends after close");
    writing.join().expect("writer thread");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        format!("{}unterminated\n", numbered(0, 50))
    );
    // Following a closed log is a plain read.
    let again = read_all(dir.path(), follow, Some(log.live())).await;
    assert!(again.starts_with("before\nline 0\n"));
}

#[tokio::test]
async fn follow_ends_when_last_writer_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    let live = log.live();
    let follow = LogOptions {
        follow: true,
        tail: Some(0),
        ..Default::default()
    };
    log.write(Stream::Stdout, b"old\n");
    // The follower forwards what it reads as it reads it, so the test can tell when it
    // has positioned itself at the end (there is no hook for that moment).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let path = dir.path().to_path_buf();
    let reading = tokio::spawn(async move {
        let mut stream = Box::pin(read(&path, 0, follow, Some(live)));
        while let Some(chunk) = stream.next().await {
            let _ = tx.send(chunk.expect("read chunk"));
        }
    });
    // Write markers until the follower shows one: from then on it is following, and
    // nothing written later can fall before its starting point.
    let mut out = Vec::new();
    let mut markers = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never showed a line"
        );
        log.write(Stream::Stdout, format!("marker {markers}\n").as_bytes());
        markers += 1;
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
            out.extend_from_slice(&chunk);
        }
    }
    log.write(Stream::Stdout, b"new\npartial");
    drop(log);
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("follow ends")
        .expect("task");
    while let Ok(chunk) = rx.try_recv() {
        out.extend_from_slice(&chunk);
    }
    let out = String::from_utf8(out).expect("utf-8");
    // tail=0 skips "old" and whatever markers were written before the follower opened
    // the log; every line after its starting point arrives, in order.
    let first: usize = out
        .strip_prefix("marker ")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the follow did not start with a marker: {out:?}"));
    let want: String = (first..markers)
        .map(|i| format!("marker {i}\n"))
        .chain(["new\npartial\n".to_string()])
        .collect();
    assert_eq!(out, want);
}

#[tokio::test]
async fn follow_across_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rotation = Rotation {
        max_bytes: 600,
        max_files: 1000,
    };
    let log = writer(dir.path(), rotation);
    log.write(Stream::Stdout, numbered(0, 10).as_bytes());
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = read(dir.path(), 0, follow, Some(log.live()));
    let reading = tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8(out).expect("utf-8")
    });
    let writer_log = log.clone();
    std::thread::spawn(move || {
        for i in 10..2000 {
            writer_log.write(Stream::Stdout, format!("line {i}\n").as_bytes());
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        writer_log.close();
    })
    .join()
    .expect("writer");
    let out = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("follow ends")
        .expect("task");
    assert_eq!(out, numbered(0, 2000));
    let files = std::fs::read_dir(dir.path()).expect("list").count();
    assert!(files > 20, "rotated {files} times");
}

#[tokio::test]
async fn follow_with_fast_rotation_skips_but_stays_in_order() {
    // max_files 2 and a follower that starts late: what it sees is a
    // subsequence of the lines, in order, ending with the last one.
    let dir = tempfile::tempdir().expect("tempdir");
    let rotation = Rotation {
        max_bytes: 300,
        max_files: 2,
    };
    let log = writer(dir.path(), rotation);
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = read(dir.path(), 0, follow, Some(log.live()));
    let reading = tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8(out).expect("utf-8")
    });
    for i in 0..3000 {
        log.write(Stream::Stdout, format!("line {i}\n").as_bytes());
    }
    log.close();
    let out = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("follow ends")
        .expect("task");
    let seen: Vec<usize> = out
        .lines()
        .map(|l| l.strip_prefix("line ").expect("prefix").parse().expect("n"))
        .collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(seen.last(), Some(&2999));
}

#[tokio::test]
async fn reopening_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    log.write(Stream::Stdout, b"first\n");
    log.close();
    drop(log);
    let log = writer(dir.path(), Rotation::default());
    log.write(Stream::Stdout, b"second\n");
    drop(log);
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    assert_eq!(out, "first\nsecond\n");
}

#[tokio::test]
async fn reopening_counts_existing_size_for_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rotation = Rotation {
        max_bytes: 200,
        max_files: 5,
    };
    let log = writer(dir.path(), rotation);
    log.write(Stream::Stdout, numbered(0, 3).as_bytes());
    drop(log);
    let log = writer(dir.path(), rotation);
    log.write(Stream::Stdout, numbered(3, 6).as_bytes());
    drop(log);
    assert!(dir.path().join("0.log.1").exists());
    let out = read_all(dir.path(), LogOptions::default(), None).await;
    assert_eq!(out, numbered(0, 6));
}

#[tokio::test]
async fn concurrent_writers_never_tear_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = writer(dir.path(), Rotation::default());
    let threads: Vec<_> = (0..8)
        .map(|t: usize| {
            let log = log.clone();
            std::thread::spawn(move || {
                let stream = if t.is_multiple_of(2) {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                let line = format!("{t}:{}\n", "x".repeat(100 + t * 1000));
                for _ in 0..200 {
                    log.write(stream, line.as_bytes());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    log.close();
    let recs = records(log.path());
    assert_eq!(recs.len(), 8 * 200);
    let mut counts = [0; 8];
    for (_, stream, partial, content) in &recs {
        assert!(!partial);
        let text = std::str::from_utf8(content).expect("utf-8");
        let (t, xs) = text.split_once(':').expect("thread prefix");
        let t: usize = t.parse().expect("thread number");
        assert_eq!(xs, "x".repeat(100 + t * 1000));
        assert_eq!(*stream == Stream::Stdout, t.is_multiple_of(2));
        counts[t] += 1;
    }
    assert_eq!(counts, [200; 8]);
    for pair in recs.windows(2) {
        assert!(pair[0].0 < pair[1].0, "timestamps strictly increase");
    }
}

#[tokio::test]
async fn prune_removes_older_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for restart in 0..4 {
        let log = LogWriter::create(dir.path(), restart, Rotation::default()).expect("create");
        log.write(Stream::Stdout, b"x\n");
    }
    std::fs::write(dir.path().join("1.log.1"), b"").expect("rotated");
    std::fs::write(dir.path().join("other"), b"").expect("other");
    prune(dir.path(), 2).expect("prune");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["2.log", "3.log", "other"]);
    prune(&dir.path().join("missing"), 1).expect("missing dir is fine");
}
