//! The protocol side of `kubectl exec` and `kubectl attach` (the kubelet's
//! `remotecommand` server), over both transports kubectl uses:
//!
//! - WebSocket with `v5.channel.k8s.io` / `v4.channel.k8s.io` (kubectl 1.30 and later),
//!   framed as [`crate::channel`] says;
//! - SPDY/3.1 with `v4.channel.k8s.io` (older kubectl, and the fallback of newer ones):
//!   one SPDY stream per channel, named by its `streamtype` header.
//!
//! A [`Session`] hides the difference: the caller reads stdin and terminal sizes, writes
//! stdout and stderr through [`Output`], and ends with the command's result.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::channel;
use crate::spdy;
use crate::upgrade::{Negotiated, Transport};

/// WebSocket subprotocols of exec and attach, in our order of preference.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// SPDY stream protocol versions of exec and attach.
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];

/// Messages queued towards the client, each at most [`OUT_CHUNK`] bytes (about 8 MiB in
/// all). When the queue is full [`Output::write`] waits, as the kubelet's pipes block a
/// process that writes faster than its client reads; memory stays bounded (SPN-16).
pub const OUT_QUEUE: usize = 256;
/// The largest message of output: the containerd pump's read size. A Wasm guest may
/// write up to 1 MiB at once; that write is queued in pieces.
const OUT_CHUNK: usize = 32 << 10;
/// Chunks of stdin queued for the command; a command that does not read its stdin
/// stops the client's sending (through the connection) instead of growing this.
const STDIN_QUEUE: usize = 16;
/// How long a SPDY client has to open the streams it asked for (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished WebSocket session waits for the client's close reply.
/// Until then the client's frames (pings, its close) must be read: a socket
/// closed with unread input is reset by the kernel, which throws away output
/// still queued for a client that reads slowly.
const CLOSE_LINGER: Duration = Duration::from_secs(30);

/// What the exec or attach request asked for (its query).
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Attach to the container's main process instead of running a command.
    pub attach: bool,
}

impl ExecRequest {
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        let flag = |k: &str| {
            pairs
                .iter()
                .any(|(n, v)| n == k && (v.is_empty() || v == "true" || v == "1"))
        };
        ExecRequest {
            command: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
            tty: flag("tty"),
            attach: false,
        }
    }
}

/// Which output of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdStream {
    Stdout,
    Stderr,
}

/// The client reads more slowly than its output comes ([`Output::try_write`]).
#[derive(Debug, thiserror::Error)]
#[error("the client reads more slowly than the output comes ({OUT_QUEUE} messages pending)")]
pub struct Overflow;

/// Where the command's output goes; cheap to clone.
#[derive(Clone)]
pub struct Output(OutputTo);

#[derive(Clone)]
enum OutputTo {
    WebSocket {
        tx: mpsc::Sender<Message>,
        /// Ends the connection at once, queued messages or not.
        abort: Arc<Notify>,
        stdout: bool,
        stderr: bool,
        tty: bool,
    },
    Spdy {
        sender: spdy::Sender,
        stdout: Option<u32>,
        stderr: Option<u32>,
        tty: bool,
    },
}

/// Where one stream of output goes: a WebSocket channel or a SPDY stream.
#[derive(Clone, Copy)]
enum Dest<'a> {
    Channel(&'a mpsc::Sender<Message>, u8),
    Stream(&'a spdy::Sender, u32),
}

impl Output {
    /// Where `s` goes, if the client asked for it.
    fn dest(&self, s: StdStream) -> Option<Dest<'_>> {
        match &self.0 {
            OutputTo::WebSocket {
                tx,
                stdout,
                stderr,
                tty,
                ..
            } => match s {
                StdStream::Stdout if *stdout => Some(channel::STDOUT),
                // With a TTY there is no separate stderr: it goes to the terminal.
                StdStream::Stderr if *tty && *stdout => Some(channel::STDOUT),
                StdStream::Stderr if *stderr => Some(channel::STDERR),
                _ => None,
            }
            .map(|ch| Dest::Channel(tx, ch)),
            OutputTo::Spdy {
                sender,
                stdout,
                stderr,
                tty,
            } => match s {
                StdStream::Stdout => *stdout,
                StdStream::Stderr if *tty => *stdout,
                StdStream::Stderr => *stderr,
            }
            .map(|id| Dest::Stream(sender, id)),
        }
    }

    /// Whether the client asked for `s` (else writes of it are dropped).
    pub fn carries(&self, s: StdStream) -> bool {
        self.dest(s).is_some()
    }

    /// Sends `data`, waiting while the client is behind; after the client is gone the
    /// data is dropped as it comes.
    pub async fn write(&self, s: StdStream, data: Bytes) {
        let Some(dest) = self.dest(s) else {
            return;
        };
        for piece in pieces(data) {
            match dest {
                Dest::Channel(tx, ch) => {
                    if tx.send(ws_message(ch, &piece)).await.is_err() {
                        break;
                    }
                }
                Dest::Stream(sender, id) => sender.data(id, piece).await,
            }
        }
    }

    /// Queues `data` without waiting, for output that must go on whether or not this
    /// client keeps up (an attach shares the container's output with its log).
    pub fn try_write(&self, s: StdStream, data: Bytes) -> Result<(), Overflow> {
        let Some(dest) = self.dest(s) else {
            return Ok(());
        };
        let full = pieces(data).any(|piece| match dest {
            Dest::Channel(tx, ch) => matches!(
                tx.try_send(ws_message(ch, &piece)),
                Err(TrySendError::Full(_))
            ),
            Dest::Stream(sender, id) => sender.try_data(id, piece).is_err(),
        });
        if full {
            Err(Overflow)
        } else {
            Ok(())
        }
    }

    /// Closes the connection without sending what is queued.
    pub fn abort(&self) {
        match &self.0 {
            OutputTo::WebSocket { abort, .. } => abort.notify_one(),
            OutputTo::Spdy { sender, .. } => sender.abort(),
        }
    }
}

/// A binary message on `ch` (one of the [`crate::channel`] bytes).
fn ws_message(ch: u8, payload: &[u8]) -> Message {
    Message::Binary(channel::message(ch, payload).into())
}

/// `data` in messages of at most [`OUT_CHUNK`] bytes (no copies).
fn pieces(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!data.is_empty()).then(|| data.split_to(data.len().min(OUT_CHUNK))))
}

/// An exec or attach session with its client.
pub struct Session {
    /// The client's stdin, if it asked to send one; ends at the client's end of input.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal sizes (columns, rows), with a TTY.
    pub resize: Option<mpsc::UnboundedReceiver<(u16, u16)>>,
    pub output: Output,
    end: End,
}

/// What ending the session takes, per transport.
enum End {
    WebSocket {
        tx: mpsc::Sender<Message>,
        writer: JoinHandle<()>,
        reader: JoinHandle<()>,
    },
    Spdy {
        sender: spdy::Sender,
        /// The streams to half-close: stdout, stderr.
        outputs: [Option<u32>; 2],
        error: Option<u32>,
        /// The client's streams, kept open until the end as they were opened.
        streams: HashMap<String, spdy::IncomingStream>,
    },
}

/// The session on an upgraded connection; `None` if the client went away or (SPDY) did
/// not open the streams it asked for in time.
pub async fn accept(n: Negotiated, req: &ExecRequest) -> Option<Session> {
    let v5 = n.protocol.starts_with("v5");
    let transport = n.transport;
    let io = n.upgraded().await?;
    match transport {
        Transport::WebSocket => Some(websocket(TokioIo::new(io), req, v5).await),
        Transport::Spdy => spdy(TokioIo::new(io), req).await,
    }
}

/// Terminal sizes (columns, rows) from the client to the command.
type Sizes = (
    Option<mpsc::UnboundedSender<(u16, u16)>>,
    Option<mpsc::UnboundedReceiver<(u16, u16)>>,
);

fn resize_channel(tty: bool) -> Sizes {
    if !tty {
        return (None, None);
    }
    // Unbounded because the runtimes take an UnboundedReceiver; a size is 4 bytes and
    // costs the client a JSON message or more, and its stream's own queue is bounded.
    let (tx, rx) = mpsc::unbounded_channel();
    (Some(tx), Some(rx))
}

/// A session over WebSocket (`v5` when that subprotocol was chosen).
pub async fn websocket<IO>(io: IO, req: &ExecRequest, v5: bool) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let abort = Arc::new(Notify::new());
    let aborted = abort.clone();
    let writer = tokio::spawn(async move {
        let write = async {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        // Dropping the sink (on abort) closes the connection.
        tokio::select! {
            () = write => {}
            () = aborted.notified() => {}
        }
    });
    let (stdin_tx, stdin) = if req.stdin {
        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (resize_tx, resize) = resize_channel(req.tty);
    // Reader: stdin, terminal sizes and close signals.
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        while let Some(Ok(msg)) = source.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match data.first() {
                Some(&channel::STDIN) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data.slice(1..)).await;
                    }
                }
                Some(&channel::CLOSE) if v5 && data.get(1) == Some(&channel::STDIN) => {
                    stdin_tx = None
                }
                Some(&channel::RESIZE) => {
                    if let (Some(tx), Some(size)) =
                        (&resize_tx, channel::parse_terminal_size(&data[1..]))
                    {
                        let _ = tx.send(size);
                    }
                }
                _ => {}
            }
        }
    });
    Session {
        stdin,
        resize,
        output: Output(OutputTo::WebSocket {
            tx: out_tx.clone(),
            abort,
            stdout: req.stdout,
            stderr: req.stderr,
            tty: req.tty,
        }),
        end: End::WebSocket {
            tx: out_tx,
            writer,
            reader,
        },
    }
}

/// The SPDY streams an exec or attach client opens for `req`.
fn expected_streams(req: &ExecRequest) -> Vec<&'static str> {
    let mut expected = vec!["error"];
    if req.stdin {
        expected.push("stdin");
    }
    if req.stdout {
        expected.push("stdout");
    }
    if req.stderr && !req.tty {
        expected.push("stderr");
    }
    // Protocol v3 and later open a resize stream with a TTY.
    if req.tty {
        expected.push("resize");
    }
    expected
}

/// A session over SPDY, once the client has opened its streams.
pub async fn spdy<IO>(io: IO, req: &ExecRequest) -> Option<Session>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (sender, mut streams) = spdy::serve(io);
    let mut ids: HashMap<String, spdy::IncomingStream> = HashMap::new();
    let expected = expected_streams(req);
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !expected.iter().all(|k| ids.contains_key(*k)) {
        match tokio::time::timeout_at(deadline, streams.recv()).await {
            Ok(Some(s)) => {
                let kind = s.header("streamtype").unwrap_or_default().to_string();
                ids.insert(kind, s);
            }
            _ => {
                tracing::debug!("exec client did not open its streams");
                return None;
            }
        }
    }
    let stdin = ids.remove("stdin").map(|s| s.data);
    let (resize_tx, resize) = resize_channel(req.tty);
    if let (Some(mut s), Some(tx)) = (ids.remove("resize"), resize_tx) {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(b) = s.data.recv().await {
                buf.extend_from_slice(&b);
                for size in channel::drain_terminal_sizes(&mut buf) {
                    let _ = tx.send(size);
                }
            }
        });
    }
    let id = |k: &str| ids.get(k).map(|s| s.id);
    let (stdout, stderr, error) = (id("stdout"), id("stderr"), id("error"));
    Some(Session {
        stdin,
        resize,
        output: Output(OutputTo::Spdy {
            sender: sender.clone(),
            stdout,
            stderr,
            tty: req.tty,
        }),
        end: End::Spdy {
            sender,
            outputs: [stdout, stderr],
            error,
            streams: ids,
        },
    })
}

impl Session {
    /// Reports the command's `result` on the error channel (see
    /// [`channel::exit_status`]) and ends the session once its output is sent.
    pub async fn finish<E: Display>(self, result: &Result<i32, E>) {
        let status = channel::exit_status(result);
        match self.end {
            End::WebSocket { tx, writer, reader } => {
                let m = channel::message(channel::ERROR, status.as_bytes());
                let _ = tx.send(Message::Binary(m.into())).await;
                // A close with a status: client-go treats a bare close (1005) as a
                // read error.
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
                let _ = tx.send(close).await;
                drop(tx);
                let _ = writer.await;
                let mut reader = reader;
                if tokio::time::timeout(CLOSE_LINGER, &mut reader)
                    .await
                    .is_err()
                {
                    reader.abort();
                }
            }
            End::Spdy {
                sender,
                outputs,
                error,
                streams,
            } => {
                for id in outputs.into_iter().flatten() {
                    sender.finish(id).await;
                }
                if let Some(id) = error {
                    // Success is the error stream closed without a Status.
                    if !matches!(result, Ok(0)) {
                        sender.data(id, Bytes::from(status)).await;
                    }
                    sender.finish(id).await;
                }
                // Let the frames go out, then end the connection.
                tokio::time::sleep(Duration::from_millis(100)).await;
                sender.go_away().await;
                drop(streams);
            }
        }
    }
}

#[cfg(test)]
mod tests;
