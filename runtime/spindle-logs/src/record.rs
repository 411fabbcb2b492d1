//! One CRI log record: encoding and parsing.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::Stream;

/// Content bytes per record; longer lines are split into partial records.
/// The same limit as containerd's CRI plugin, so readers built for its files
/// make the same assumptions about ours.
pub const MAX_RECORD_CONTENT: usize = 16 * 1024;

/// One parsed record (one line of a log file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: DateTime<Utc>,
    pub stream: Stream,
    /// Tag `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Why a line of a log file is not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("log record has no {0} field")]
    MissingField(&'static str),
    #[error("log record timestamp is not RFC 3339: {0}")]
    Timestamp(String),
    #[error("log record has unknown stream {0:?}")]
    Stream(String),
    #[error("log record has unknown tag {0:?}")]
    Tag(String),
}

/// Timestamps with all nine fraction digits (Go's RFC3339NanoFixed), which
/// is what the kubelet prints for `--timestamps`; the fixed width also keeps
/// records of one file sortable as text.
pub(crate) fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Appends one record, newline included, to `out`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    ts: &DateTime<Utc>,
    stream: Stream,
    partial: bool,
    content: &[u8],
) {
    out.reserve(content.len() + 48);
    out.extend_from_slice(format_timestamp(ts).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

fn split_field<'a>(line: &'a [u8], name: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let at = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::MissingField(name))?;
    Ok((&line[..at], &line[at + 1..]))
}

/// Parses one line of a log file (the trailing newline is optional).
///
/// Lenient like the kubelet: any RFC 3339 timestamp is accepted, and the tag
/// may carry further `:`-separated tags after `P`/`F`.
pub fn parse_record(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (ts, rest) = split_field(line, "stream")?;
    let ts_text = String::from_utf8_lossy(ts);
    let timestamp = DateTime::parse_from_rfc3339(&ts_text)
        .map_err(|_| ParseError::Timestamp(ts_text.to_string()))?
        .with_timezone(&Utc);
    let (stream, rest) = split_field(rest, "tag")?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(String::from_utf8_lossy(other).into())),
    };
    // A record with empty content may have lost its trailing space to an
    // editor or a tool; the tag then ends the line.
    let (tag, content) = match rest.iter().position(|&b| b == b' ') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let first = tag.split(|&b| b == b':').next().unwrap_or_default();
    let partial = match first {
        b"P" => true,
        b"F" => false,
        _ => return Err(ParseError::Tag(String::from_utf8_lossy(tag).into())),
    };
    Ok(Record {
        timestamp,
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trip() {
        let ts = Utc.timestamp_opt(1_475_713_029, 669_794_202).single();
        let Some(ts) = ts else { panic!("valid time") };
        let mut out = Vec::new();
        encode(&mut out, &ts, Stream::Stdout, false, b"hello");
        assert_eq!(out, b"2016-10-06T00:17:09.669794202Z stdout F hello\n");
        let rec = parse_record(&out).expect("parses");
        assert_eq!(rec.timestamp, ts);
        assert_eq!(rec.stream, Stream::Stdout);
        assert!(!rec.partial);
        assert_eq!(rec.content, b"hello");
    }

    #[test]
    fn lenient_parsing() {
        let rec = parse_record(b"2016-10-06T00:17:09.5Z stderr P:x a b ").expect("parses");
        assert_eq!(rec.stream, Stream::Stderr);
        assert!(rec.partial);
        assert_eq!(rec.content, b"a b ");
        let rec = parse_record(b"2016-10-06T00:17:09Z stdout F").expect("parses");
        assert_eq!(rec.content, b"");
        let rec = parse_record(b"2016-10-06T02:17:09+02:00 stdout F x").expect("parses");
        assert_eq!(
            format_timestamp(&rec.timestamp),
            "2016-10-06T00:17:09.000000000Z"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(
            parse_record(b"garbage"),
            Err(ParseError::MissingField("stream"))
        );
        assert!(matches!(
            parse_record(b"yesterday stdout F x"),
            Err(ParseError::Timestamp(_))
        ));
        assert!(matches!(
            parse_record(b"2016-10-06T00:17:09Z stdin F x"),
            Err(ParseError::Stream(_))
        ));
        assert!(matches!(
            parse_record(b"2016-10-06T00:17:09Z stdout X x"),
            Err(ParseError::Tag(_))
        ));
    }
}
