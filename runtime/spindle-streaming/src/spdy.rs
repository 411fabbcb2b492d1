//! SPDY/3.1, the server side of the subset kubectl speaks for exec and port-forward
//! (client-go's `httpstream/spdy`, over moby/spdystream): SYN_STREAM/SYN_REPLY, DATA,
//! RST_STREAM, PING, GOAWAY, SETTINGS and WINDOW_UPDATE, with header blocks compressed by
//! one zlib stream per direction primed with the SPDY/3 dictionary.
//!
//! Hand-written because no maintained Rust crate implements SPDY (it was superseded by
//! HTTP/2 years ago), yet every kubectl before 1.30 and every kubectl's fallback needs it.
//! spdystream does no flow control, so neither does this: WINDOW_UPDATE is read and
//! ignored. Memory is bounded instead by bounded queues (review SPN-16): a stream whose
//! reader is slow stops the connection's reader (the client's writes then block, as
//! Go's io.Copy does), and a slow client blocks [`Sender::data`]. Header blocks are
//! inflated up to [`MAX_HEADER_BLOCK`] only.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
/// Frames larger than this are refused (spdystream's own limit is 16 MiB).
const MAX_FRAME: usize = 16 << 20;
/// Most bytes a header block may inflate to, names and values counted with
/// [`HEADER_ENTRY_OVERHEAD`] each: Go's net/http and http2 default
/// (`DefaultMaxHeaderBytes`, 1 MiB). A zlib bomb inflates about 1000:1, so without a
/// cap one 16 MiB SYN_STREAM would become gigabytes.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What one name/value pair costs beyond its bytes, as HTTP/2 counts it (RFC 7540
/// 6.5.2): a block of many empty values must not make a huge list either.
const HEADER_ENTRY_OVERHEAD: usize = 32;
/// Streams a client may have open on one connection; more are refused with
/// RST_STREAM REFUSED_STREAM. kubectl opens at most 5 for an exec and 2 per forwarded
/// connection.
const MAX_OPEN_STREAMS: usize = 1024;
/// Frames queued towards the client before [`Sender::data`] waits.
const OUT_QUEUE: usize = 256;
/// Data frames queued for one stream's reader before the connection's reader waits.
const STREAM_QUEUE: usize = 8;
/// New streams queued for the session before the connection's reader waits.
const NEW_STREAM_QUEUE: usize = 32;
const RST_PROTOCOL_ERROR: u32 = 1;
const RST_REFUSED_STREAM: u32 = 3;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1):
/// these words, each behind its 32-bit big-endian length, then [`DICTIONARY_TAIL`] as is.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411\
412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server \
Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct \
Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,\
image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1500);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad SPDY frame: {0}")]
    Protocol(String),
    /// The header block of stream `id` inflates past [`MAX_HEADER_BLOCK`]. The shared
    /// zlib stream is then out of step, so the connection cannot go on either.
    #[error("header block of stream {id} is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge { id: u32 },
}

pub type Headers = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    /// Frames this server reads and has nothing to do with (SETTINGS, WINDOW_UPDATE, ...).
    Ignored,
}

/// Header blocks in: one zlib stream for the whole connection.
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(true))
    }
}

impl Inflater {
    /// Inflates a header block; `None` when it would be larger than `limit`.
    fn inflate(&mut self, mut input: &[u8], limit: usize) -> Result<Option<Vec<u8>>, SpdyError> {
        let mut out = Vec::with_capacity((input.len() * 4 + 64).min(limit + 1));
        loop {
            if out.len() > limit {
                return Ok(None);
            }
            if out.capacity() - out.len() < 256 {
                // Never more room than one byte past the limit: that byte tells.
                let room = out.capacity().max(1024).min(limit + 1 - out.len());
                out.reserve(room.max(1));
            }
            let before = self.0.total_in();
            let res = self
                .0
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.0.total_in() - before) as usize;
            input = &input[used..];
            match res {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {
                    if input.is_empty() && out.capacity() > out.len() {
                        return Ok((out.len() <= limit).then_some(out));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("header block: {e}"))),
            }
        }
    }

    /// The headers of stream `id`'s block, at most [`MAX_HEADER_BLOCK`] of them.
    fn headers(&mut self, id: u32, block: &[u8]) -> Result<Headers, SpdyError> {
        let too_large = || SpdyError::HeaderBlockTooLarge { id };
        let raw = self
            .inflate(block, MAX_HEADER_BLOCK)?
            .ok_or_else(too_large)?;
        let mut b = &raw[..];
        let bad = || SpdyError::Protocol("truncated header block".into());
        let take = |b: &mut &[u8]| -> Result<Vec<u8>, SpdyError> {
            if b.remaining() < 4 {
                return Err(bad());
            }
            let n = b.get_u32() as usize;
            if b.remaining() < n {
                return Err(bad());
            }
            let v = b[..n].to_vec();
            b.advance(n);
            Ok(v)
        };
        if b.remaining() < 4 {
            return Err(bad());
        }
        let count = b.get_u32();
        let mut headers = Vec::new();
        // Each NUL-separated value repeats the name: count what the list holds, not
        // what came in, or a long name with many empty values multiplies.
        let mut size = 0usize;
        for _ in 0..count {
            let name = String::from_utf8_lossy(&take(&mut b)?).to_ascii_lowercase();
            let value = take(&mut b)?;
            for v in value.split(|c| *c == 0) {
                size += name.len() + v.len() + HEADER_ENTRY_OVERHEAD;
                if size > MAX_HEADER_BLOCK {
                    return Err(too_large());
                }
                headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
            }
        }
        Ok(headers)
    }
}

/// Header blocks out.
pub struct Deflater {
    z: Compress,
    primed: bool,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Deflater {
    fn headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        if !self.primed {
            self.z
                .set_dictionary(dictionary())
                .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
            self.primed = true;
        }
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.extend_from_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Protocol(format!("compressing headers: {e}")))?;
            input = &input[(self.z.total_in() - before) as usize..];
            // A sync flush is complete once the output has room left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Reads one frame from `buf` if a whole one is there.
pub fn decode(buf: &mut BytesMut, inflater: &mut Inflater) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head = buf.split_to(8);
    let mut body = buf.split_to(len).freeze();
    let flags = head[4];
    if head[0] & 0x80 == 0 {
        let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            id,
            data: body,
            fin: flags & FLAG_FIN != 0,
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(SpdyError::Protocol(format!("SPDY version {version}")));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let short = || SpdyError::Protocol(format!("short control frame {kind}"));
    Ok(Some(match kind {
        SYN_STREAM => {
            if body.len() < 10 {
                return Err(short());
            }
            let id = body.get_u32() & 0x7fff_ffff;
            body.advance(6); // associated stream, priority, slot
            Frame::SynStream {
                id,
                headers: inflater.headers(id, &body)?,
                fin: flags & FLAG_FIN != 0,
            }
        }
        SYN_REPLY | HEADERS => {
            if body.len() < 4 {
                return Err(short());
            }
            let id = body.get_u32() & 0x7fff_ffff;
            // Keep the shared zlib stream in step even though we ignore these.
            let headers = inflater.headers(id, &body)?;
            if kind == SYN_REPLY {
                Frame::SynReply {
                    id,
                    headers,
                    fin: flags & FLAG_FIN != 0,
                }
            } else {
                Frame::Ignored
            }
        }
        RST_STREAM => {
            if body.len() < 8 {
                return Err(short());
            }
            Frame::RstStream {
                id: body.get_u32() & 0x7fff_ffff,
                status: body.get_u32(),
            }
        }
        PING => {
            if body.len() < 4 {
                return Err(short());
            }
            Frame::Ping(body.get_u32())
        }
        GOAWAY => Frame::GoAway,
        SETTINGS | WINDOW_UPDATE => Frame::Ignored,
        _ => Frame::Ignored,
    }))
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | body.len() as u32);
    out.extend_from_slice(body);
}

/// Appends `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut, deflater: &mut Deflater) -> Result<(), SpdyError> {
    match frame {
        Frame::SynStream { id, headers, fin } => {
            let mut body = BytesMut::new();
            body.put_u32(*id);
            body.put_u32(0);
            body.put_u16(0);
            body.extend_from_slice(&deflater.headers(headers)?);
            control(out, SYN_STREAM, if *fin { FLAG_FIN } else { 0 }, &body);
        }
        Frame::SynReply { id, headers, fin } => {
            let mut body = BytesMut::new();
            body.put_u32(*id);
            body.extend_from_slice(&deflater.headers(headers)?);
            control(out, SYN_REPLY, if *fin { FLAG_FIN } else { 0 }, &body);
        }
        Frame::RstStream { id, status } => {
            let mut body = BytesMut::new();
            body.put_u32(*id);
            body.put_u32(*status);
            control(out, RST_STREAM, 0, &body);
        }
        Frame::Ping(n) => control(out, PING, 0, &n.to_be_bytes()),
        Frame::GoAway => control(out, GOAWAY, 0, &[0, 0, 0, 0, 0, 0, 0, 0]),
        Frame::Data { id, data, fin } => {
            for (i, chunk) in data.chunks(1 << 20).enumerate() {
                let last = (i + 1) * (1 << 20) >= data.len();
                out.put_u32(*id & 0x7fff_ffff);
                let flags = if *fin && last { FLAG_FIN } else { 0 };
                out.put_u32(((flags as u32) << 24) | chunk.len() as u32);
                out.extend_from_slice(chunk);
            }
            if data.is_empty() {
                out.put_u32(*id & 0x7fff_ffff);
                out.put_u32(if *fin { (FLAG_FIN as u32) << 24 } else { 0 });
            }
        }
        Frame::Ignored => {}
    }
    Ok(())
}

/// A stream the client opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// Its data; ends when the client half-closes (FIN) or resets the stream. Bounded:
    /// while it is full, the connection reads nothing more from the client.
    pub data: mpsc::Receiver<Bytes>,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The client reads more slowly than frames are queued for it ([`Sender::try_data`]).
#[derive(Debug, thiserror::Error)]
#[error("the client reads more slowly than the output comes ({OUT_QUEUE} frames pending)")]
pub struct Overflow;

/// Sends frames on a connection; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    out: mpsc::Sender<Frame>,
    /// Ends the connection at once, queued frames or not.
    abort: Arc<Notify>,
}

impl Sender {
    /// Queues data for stream `id`, waiting while the client is behind.
    pub async fn data(&self, id: u32, data: Bytes) {
        let _ = self
            .out
            .send(Frame::Data {
                id,
                data,
                fin: false,
            })
            .await;
    }

    /// Queues data without waiting, for producers that cannot wait (an exec's output
    /// callback). A connection gone already is not an overflow.
    pub fn try_data(&self, id: u32, data: Bytes) -> Result<(), Overflow> {
        match self.out.try_send(Frame::Data {
            id,
            data,
            fin: false,
        }) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(Overflow),
            _ => Ok(()),
        }
    }

    /// Half-closes stream `id` from our side.
    pub async fn finish(&self, id: u32) {
        let _ = self
            .out
            .send(Frame::Data {
                id,
                data: Bytes::new(),
                fin: true,
            })
            .await;
    }

    pub async fn go_away(&self) {
        let _ = self.out.send(Frame::GoAway).await;
    }

    /// Closes the connection without sending what is queued.
    pub fn abort(&self) {
        self.abort.notify_one();
    }
}

/// Serves a SPDY connection: every stream the client opens is answered with SYN_REPLY
/// and handed over on the returned channel. The connection ends when the client goes
/// away, on [`Sender::abort`], or when every [`Sender`] is dropped (the writer then
/// shuts the connection).
pub fn serve<IO>(io: IO) -> (Sender, mpsc::Receiver<IncomingStream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Frame>(OUT_QUEUE);
    let (streams_tx, streams_rx) = mpsc::channel(NEW_STREAM_QUEUE);
    let sender = Sender {
        out: out_tx,
        abort: Arc::new(Notify::new()),
    };
    tokio::spawn(write_frames(wr, out_rx, sender.abort.clone()));
    tokio::spawn(read_frames(rd, sender.clone(), streams_tx));
    (sender, streams_rx)
}

/// The writer: owns the outgoing zlib stream.
async fn write_frames<W: AsyncWrite>(
    mut wr: tokio::io::WriteHalf<W>,
    mut out_rx: mpsc::Receiver<Frame>,
    abort: Arc<Notify>,
) {
    let mut deflater = Deflater::default();
    let mut buf = BytesMut::new();
    let write = async {
        while let Some(frame) = out_rx.recv().await {
            buf.clear();
            if let Err(e) = encode(&frame, &mut buf, &mut deflater) {
                tracing::debug!(error = %e, "SPDY encode");
                break;
            }
            // Take whatever else is queued into the same write.
            while let Ok(more) = out_rx.try_recv() {
                if encode(&more, &mut buf, &mut deflater).is_err() {
                    break;
                }
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        () = write => {}
        () = abort.notified() => {}
    }
}

/// The reader: owns the incoming zlib stream and routes data to streams.
async fn read_frames<R: AsyncRead>(
    mut rd: tokio::io::ReadHalf<R>,
    replies: Sender,
    streams_tx: mpsc::Sender<IncomingStream>,
) {
    let mut inflater = Inflater::default();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        loop {
            let frame = match decode(&mut buf, &mut inflater) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    refuse(&replies, &e).await;
                    return;
                }
            };
            if !route(frame, &mut open, &replies, &streams_tx).await {
                return;
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Ends a connection whose client sent what cannot be read: the stream that carried it
/// is reset with PROTOCOL_ERROR (as HTTP/2 answers a COMPRESSION_ERROR), then GOAWAY.
async fn refuse(replies: &Sender, e: &SpdyError) {
    tracing::debug!(error = %e, "SPDY connection");
    if let SpdyError::HeaderBlockTooLarge { id } = e {
        tracing::warn!(error = %e, "refusing a SPDY stream");
        let rst = Frame::RstStream {
            id: *id,
            status: RST_PROTOCOL_ERROR,
        };
        let _ = replies.out.send(rst).await;
    }
    replies.go_away().await;
}

/// Handles one frame from the client; false ends the connection.
async fn route(
    frame: Frame,
    open: &mut HashMap<u32, mpsc::Sender<Bytes>>,
    replies: &Sender,
    streams_tx: &mpsc::Sender<IncomingStream>,
) -> bool {
    match frame {
        Frame::SynStream { id, headers, fin } => {
            if open.len() >= MAX_OPEN_STREAMS {
                let rst = Frame::RstStream {
                    id,
                    status: RST_REFUSED_STREAM,
                };
                let _ = replies.out.send(rst).await;
                return true;
            }
            let reply = Frame::SynReply {
                id,
                headers: Vec::new(),
                fin: false,
            };
            let _ = replies.out.send(reply).await;
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            if !fin {
                open.insert(id, tx);
            }
            let stream = IncomingStream {
                id,
                headers,
                data: rx,
            };
            let _ = streams_tx.send(stream).await;
        }
        Frame::Data { id, data, fin } => {
            if let Some(tx) = open.get(&id) {
                // Waits while the stream's reader is behind: back-pressure on the client.
                if !data.is_empty() && tx.send(data).await.is_err() {
                    open.remove(&id);
                }
            }
            if fin {
                open.remove(&id);
            }
        }
        Frame::RstStream { id, .. } => {
            open.remove(&id);
        }
        Frame::Ping(n) => {
            let _ = replies.out.send(Frame::Ping(n)).await;
        }
        Frame::GoAway => return false,
        Frame::SynReply { .. } | Frame::Ignored => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        let d = dictionary();
        // Length and both ends of the dictionary in the SPDY/3 draft.
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\x00\x00\x00\x07options");
        assert!(d.ends_with(b",utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip_with_shared_zlib_streams() {
        let (mut inf, mut def) = (Inflater::default(), Deflater::default());
        let mut buf = BytesMut::new();
        let frames = vec![
            Frame::SynStream {
                id: 1,
                headers: vec![("streamtype".into(), "error".into())],
                fin: false,
            },
            Frame::SynStream {
                id: 3,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                ],
                fin: false,
            },
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"hello"),
                fin: true,
            },
            Frame::Ping(7),
            Frame::RstStream { id: 1, status: 5 },
        ];
        for f in &frames {
            encode(f, &mut buf, &mut def).expect("encode");
        }
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf, &mut inf).expect("decode") {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn a_client_stream_is_answered_and_its_data_delivered() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (sender, mut streams) = serve(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut def = Deflater::default();
        let mut out = BytesMut::new();
        encode(
            &Frame::SynStream {
                id: 1,
                headers: vec![("streamtype".into(), "stdin".into())],
                fin: false,
            },
            &mut out,
            &mut def,
        )
        .expect("encode");
        encode(
            &Frame::Data {
                id: 1,
                data: Bytes::from_static(b"x\n"),
                fin: true,
            },
            &mut out,
            &mut def,
        )
        .expect("encode");
        cwr.write_all(&out).await.expect("write");
        let mut s = streams.recv().await.expect("stream");
        assert_eq!(s.header("streamtype"), Some("stdin"));
        assert_eq!(
            s.data.recv().await.expect("data"),
            Bytes::from_static(b"x\n")
        );
        assert!(s.data.recv().await.is_none(), "FIN ends the stream");
        sender.data(1, Bytes::from_static(b"out")).await;
        sender.finish(1).await;
        let mut inf = Inflater::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 3 {
            crd.read_buf(&mut buf).await.expect("read");
            while let Some(f) = decode(&mut buf, &mut inf).expect("decode") {
                got.push(f);
            }
        }
        assert!(matches!(got[0], Frame::SynReply { id: 1, .. }));
        assert_eq!(
            got[1],
            Frame::Data {
                id: 1,
                data: Bytes::from_static(b"out"),
                fin: false
            }
        );
        assert_eq!(
            got[2],
            Frame::Data {
                id: 1,
                data: Bytes::new(),
                fin: true
            }
        );
    }
}
