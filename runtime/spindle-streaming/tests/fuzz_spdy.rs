//! Property tests ("fuzzing" that runs in `cargo test`) over the SPDY/3.1 framer, which
//! reads bytes from any client that reaches the node's endpoint with the token:
//!
//! - arbitrary bytes, and valid streams with bytes changed, decode (never panic) into
//!   frames or an error, each within [`MAX_CASE_TIME`];
//! - any sequence of frames the server may meet encodes and decodes back to itself, with
//!   the header zlib stream shared across frames as SPDY wants, however the bytes are
//!   cut into reads.
//!
//! Bound like the other fuzz tests (256 cases per property); a longer local run:
//! `PROPTEST_CASES=20000 cargo test -p spindle-streaming --test fuzz_spdy`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use spindle_streaming::spdy::{decode, encode, Deflater, Frame, Inflater};

const MAX_CASE_TIME: Duration = Duration::from_secs(2);

/// Decodes `input` fed in reads of the given sizes; the frames, and whether it ended
/// in an error.
fn decode_in_reads(input: &[u8], reads: &[usize]) -> (Vec<Frame>, bool) {
    let (mut inf, mut buf, mut frames) = (Inflater::default(), BytesMut::new(), Vec::new());
    let mut rest = input;
    let mut sizes = reads.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decode(&mut buf, &mut inf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fn timed<T>(f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let start = Instant::now();
    let out = f();
    prop_assert!(
        start.elapsed() < MAX_CASE_TIME,
        "took {:?}",
        start.elapsed()
    );
    Ok(out)
}

/// Names come back lower-cased and values are split at NUL, so those are left out.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[a-z0-9-]{0,16}", "[ -~]{0,32}"), 0..6)
}

fn stream_id() -> impl Strategy<Value = u32> {
    0u32..0x8000_0000
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (stream_id(), headers(), any::<bool>()).prop_map(|(id, headers, fin)| Frame::SynStream {
            id,
            headers,
            fin
        }),
        (stream_id(), headers(), any::<bool>()).prop_map(|(id, headers, fin)| Frame::SynReply {
            id,
            headers,
            fin
        }),
        (stream_id(), any::<u32>()).prop_map(|(id, status)| Frame::RstStream { id, status }),
        any::<u32>().prop_map(Frame::Ping),
        Just(Frame::GoAway),
        (
            stream_id(),
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<bool>()
        )
            .prop_map(|(id, data, fin)| Frame::Data {
                id,
                data: Bytes::from(data),
                fin
            }),
    ]
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let (mut def, mut out) = (Deflater::default(), BytesMut::new());
    for f in frames {
        encode(f, &mut out, &mut def).expect("encode");
    }
    out.to_vec()
}

proptest! {
    #[test]
    fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..4096), reads in prop::collection::vec(1usize..512, 1..8)) {
        timed(|| decode_in_reads(&input, &reads))?;
    }

    /// A control frame header in front of random bytes reaches the header inflater.
    #[test]
    fn arbitrary_control_frames(kind in 1u16..10, flags in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut input = vec![0x80, 3];
        input.extend_from_slice(&kind.to_be_bytes());
        input.push(flags);
        input.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        input.extend_from_slice(&body);
        timed(|| decode_in_reads(&input, &[input.len()]))?;
    }

    #[test]
    fn frames_round_trip(frames in prop::collection::vec(frame(), 0..12), reads in prop::collection::vec(1usize..300, 1..8)) {
        let bytes = encode_all(&frames);
        let (got, failed) = timed(|| decode_in_reads(&bytes, &reads))?;
        prop_assert!(!failed);
        prop_assert_eq!(got, frames);
    }

    /// Valid streams with bytes overwritten: the zlib stream and the lengths go wrong
    /// in every way.
    #[test]
    fn corrupted_streams(frames in prop::collection::vec(frame(), 1..8), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = encode_all(&frames);
        if !bytes.is_empty() {
            for (at, b) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
        }
        timed(|| decode_in_reads(&bytes, &[bytes.len()]))?;
    }
}
