//! The `channel.k8s.io` protocols: over WebSocket, every binary message starts with the
//! byte of its channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); `v5` adds the
//! message `[255, channel]`, which half-closes a channel (the client's end of stdin).
//! The error channel carries the command's outcome as a `metav1.Status`, and the resize
//! channel terminal sizes as JSON; both are the same over SPDY, where each channel is a
//! stream.

use std::fmt::Display;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` ends that channel.
pub const CLOSE: u8 = 255;

/// `payload` behind its channel byte, as one WebSocket message's data.
pub fn message(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 1);
    m.push(channel);
    m.extend_from_slice(payload);
    m
}

/// A terminal size message, `{"Width":80,"Height":24}`, as (columns, rows).
pub fn terminal_size(v: &serde_json::Value) -> Option<(u16, u16)> {
    let w = u16::try_from(v.get("Width")?.as_u64()?).ok()?;
    let h = u16::try_from(v.get("Height")?.as_u64()?).ok()?;
    Some((w, h))
}

/// The most bytes of an unfinished resize message kept: a size is about 30 bytes, and a
/// client that sends something else must not grow the buffer without end.
pub const MAX_PENDING_RESIZE: usize = 4 << 10;

/// One terminal size message in `data`.
pub fn parse_terminal_size(data: &[u8]) -> Option<(u16, u16)> {
    terminal_size(&serde_json::from_slice(data).ok()?)
}

/// Terminal sizes from a byte stream of JSON objects (SPDY's resize stream, where
/// client-go writes one object per size and a read may end inside one): the sizes
/// complete in `buf`, whose used bytes are drained so a partial object waits for the rest.
/// What cannot become a size (not JSON, or more than [`MAX_PENDING_RESIZE`] unfinished)
/// is dropped.
pub fn drain_terminal_sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    let mut sizes = Vec::new();
    let garbage = loop {
        match it.next() {
            Some(Ok(v)) => {
                used = it.byte_offset();
                sizes.extend(terminal_size(&v));
            }
            Some(Err(e)) => break !e.is_eof(),
            None => break false,
        }
    };
    buf.drain(..used);
    if garbage || buf.len() > MAX_PENDING_RESIZE {
        buf.clear();
    }
    sizes
}

/// The Status kubectl reads from the error channel when the command has ended, as the
/// kubelet writes it: `NonZeroExitCode` with the code in `details.causes`, so that
/// kubectl exits with the command's code.
pub fn exit_status<E: Display>(result: &Result<i32, E>) -> String {
    match result {
        Ok(0) => r#"{"metadata":{},"status":"Success"}"#.to_string(),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string(),
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": "InternalError",
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_kubelet_statuses() {
        let ok: Result<i32, String> = Ok(0);
        assert_eq!(exit_status(&ok), r#"{"metadata":{},"status":"Success"}"#);
        let s: serde_json::Value =
            serde_json::from_str(&exit_status::<String>(&Ok(3))).expect("json");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let failed = exit_status::<String>(&Err("container c is not running".into()));
        assert_eq!(
            failed,
            r#"{"metadata":{},"status":"Failure","message":"container c is not running","reason":"InternalError"}"#
        );
    }

    #[test]
    fn terminal_sizes_split_across_reads_are_kept_until_whole() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(drain_terminal_sizes(&mut buf), vec![(80, 24)]);
        assert_eq!(buf, br#"{"Width":1"#);
        buf.extend_from_slice(br#"20,"Height":40}"#);
        assert_eq!(drain_terminal_sizes(&mut buf), vec![(120, 40)]);
        assert!(buf.is_empty());
        // Out of range or not a size: ignored, not wrapped.
        assert_eq!(parse_terminal_size(br#"{"Width":70000,"Height":1}"#), None);
        assert_eq!(parse_terminal_size(b"[1,2]"), None);
        assert_eq!(
            parse_terminal_size(br#"{"Width":5,"Height":6}"#),
            Some((5, 6))
        );
    }

    /// A resize stream that never forms a size costs a bounded buffer, and sizes sent
    /// after the junk are read again.
    #[test]
    fn resize_junk_is_not_kept() {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            buf.extend_from_slice(b"]]]] not json at all ");
            drain_terminal_sizes(&mut buf);
            assert!(buf.len() <= MAX_PENDING_RESIZE, "{} bytes kept", buf.len());
        }
        // An object that never ends is cut at the cap too.
        buf.extend_from_slice(br#"{"Width":"#);
        for _ in 0..1000 {
            buf.extend_from_slice(b"          ");
            drain_terminal_sizes(&mut buf);
            assert!(buf.len() <= MAX_PENDING_RESIZE, "{} bytes kept", buf.len());
        }
        buf.clear();
        buf.extend_from_slice(br#"{"Width":7,"Height":8}"#);
        assert_eq!(drain_terminal_sizes(&mut buf), vec![(7, 8)]);
    }

    #[test]
    fn messages_lead_with_their_channel() {
        assert_eq!(message(STDERR, b"oops"), b"\x02oops");
        assert_eq!(message(CLOSE, &[STDIN]), vec![255, 0]);
    }
}
