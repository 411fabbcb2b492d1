//! SPDY/3.1, the server side of the subset kubectl speaks for exec and port-forward
//! (client-go's `httpstream/spdy`, over moby/spdystream): SYN_STREAM/SYN_REPLY, DATA,
//! RST_STREAM, PING, GOAWAY, SETTINGS and WINDOW_UPDATE, with header blocks compressed by
//! one zlib stream per direction primed with the SPDY/3 dictionary.
//!
//! Hand-written because no maintained Rust crate implements SPDY (it was superseded by
//! HTTP/2 years ago), yet every kubectl before 1.30 and every kubectl's fallback needs it.
//! spdystream does no flow control, so neither does this: WINDOW_UPDATE is read and
//! ignored, and data is sent as it comes.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

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
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
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
                        return Ok(out);
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

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
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
        for _ in 0..count {
            let name = String::from_utf8_lossy(&take(&mut b)?).to_ascii_lowercase();
            let value = take(&mut b)?;
            for v in value.split(|c| *c == 0) {
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
                headers: inflater.headers(&body)?,
                fin: flags & FLAG_FIN != 0,
            }
        }
        SYN_REPLY | HEADERS => {
            if body.len() < 4 {
                return Err(short());
            }
            let id = body.get_u32() & 0x7fff_ffff;
            // Keep the shared zlib stream in step even though we ignore these.
            let headers = inflater.headers(&body)?;
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
    /// Its data; ends when the client half-closes (FIN) or resets the stream.
    pub data: mpsc::UnboundedReceiver<Bytes>,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends frames on a connection; cheap to clone.
#[derive(Clone)]
pub struct Sender(mpsc::UnboundedSender<Frame>);

impl Sender {
    pub fn data(&self, id: u32, data: Bytes) {
        let _ = self.0.send(Frame::Data {
            id,
            data,
            fin: false,
        });
    }

    /// Half-closes stream `id` from our side.
    pub fn finish(&self, id: u32) {
        let _ = self.0.send(Frame::Data {
            id,
            data: Bytes::new(),
            fin: true,
        });
    }

    pub fn go_away(&self) {
        let _ = self.0.send(Frame::GoAway);
    }
}

/// Serves a SPDY connection: every stream the client opens is answered with SYN_REPLY
/// and handed over on the returned channel. The connection ends when the client goes
/// away, or when every [`Sender`] is dropped (the writer then shuts the connection).
pub fn serve<IO>(io: IO) -> (Sender, mpsc::UnboundedReceiver<IncomingStream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let replies = out_tx.clone();
    // Writer: owns the outgoing zlib stream.
    tokio::spawn(async move {
        let mut deflater = Deflater::default();
        let mut buf = BytesMut::new();
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
    });
    // Reader: owns the incoming zlib stream and routes data to streams.
    tokio::spawn(async move {
        let mut inflater = Inflater::default();
        let mut buf = BytesMut::with_capacity(64 << 10);
        let mut open: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
        'conn: loop {
            loop {
                match decode(&mut buf, &mut inflater) {
                    Ok(Some(frame)) => match frame {
                        Frame::SynStream { id, headers, fin } => {
                            let _ = replies.send(Frame::SynReply {
                                id,
                                headers: Vec::new(),
                                fin: false,
                            });
                            let (tx, rx) = mpsc::unbounded_channel();
                            if !fin {
                                open.insert(id, tx);
                            }
                            let _ = streams_tx.send(IncomingStream {
                                id,
                                headers,
                                data: rx,
                            });
                        }
                        Frame::Data { id, data, fin } => {
                            if let Some(tx) = open.get(&id) {
                                if !data.is_empty() {
                                    let _ = tx.send(data);
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
                            let _ = replies.send(Frame::Ping(n));
                        }
                        Frame::GoAway => break 'conn,
                        Frame::SynReply { .. } | Frame::Ignored => {}
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY connection");
                        break 'conn;
                    }
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    (Sender(out_tx), streams_rx)
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
        sender.data(1, Bytes::from_static(b"out"));
        sender.finish(1);
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
