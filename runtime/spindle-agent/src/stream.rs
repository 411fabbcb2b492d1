//! `kubectl exec` and `kubectl port-forward` on the agent's streaming endpoint, in both
//! wire protocols kubectl uses:
//!
//! - WebSocket with `v5.channel.k8s.io` / `v4.channel.k8s.io` (exec, kubectl 1.30+): binary
//!   messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error,
//!   4 resize; v5's `[255, id]` half-closes a channel);
//! - SPDY/3.1 (exec for older kubectl and as fallback; port-forward always), and for
//!   port-forward from kubectl 1.31 on, SPDY carried in WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`).
//!
//! The exec's outcome goes to the error channel as a Status, the way the kubelet reports
//! it (`NonZeroExitCode` with the code in `details.causes`), so kubectl exits with the
//! command's code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use spindle_logs::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::exec::{self, ExecError, ExecIo};
use crate::lifecycle::PodHandle;
use crate::runtime::{no_wait, OutputFn};
use crate::{spdy, Agent};

/// What the exec request asked for.
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

/// The Status kubectl reads from the error channel when the command has ended.
pub fn exit_status(result: &Result<i32, ExecError>) -> String {
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

/// Messages queued towards an exec's client, each at most [`OUT_CHUNK`] bytes (about
/// 8 MiB in all). When the queue is full an exec's command waits (its output pump, or
/// the Wasm guest's write, awaits room), as the kubelet's pipes block a process that
/// writes faster than its client reads; memory stays bounded (SPN-16). An attach
/// shares the container's output with its log, which must go on, so an attach client
/// this far behind is cut instead (as the kube-apiserver drops a watcher that cannot
/// keep up).
const EXEC_OUT_QUEUE: usize = 256;
/// The largest message of output: the containerd pump's read size. A Wasm guest may
/// write up to 1 MiB at once; that write is queued in pieces.
const OUT_CHUNK: usize = 32 << 10;
/// Chunks of stdin queued for the command; a command that does not read its stdin
/// stops the client's sending (through the connection) instead of growing this.
const STDIN_QUEUE: usize = 16;

/// A stdin pipe: bytes pushed into the sender come out of the guest's stdin; dropping
/// the sender is end of file.
fn stdin_pipe() -> (mpsc::Sender<Bytes>, spindle_wasm::Stdin) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
    let (mut w, r) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    (tx, spindle_wasm::Stdin::new(r))
}

type ResizeChannel = (
    Option<mpsc::UnboundedSender<(u16, u16)>>,
    Option<mpsc::UnboundedReceiver<(u16, u16)>>,
);

fn resize_channel(tty: bool) -> ResizeChannel {
    if !tty {
        return (None, None);
    }
    // Unbounded because the runtimes take an UnboundedReceiver (containers::ExecStreams);
    // a size is 4 bytes and costs the client a JSON message or more, and its stream's
    // own queue is bounded.
    let (tx, rx) = mpsc::unbounded_channel();
    (Some(tx), Some(rx))
}

/// A terminal size message, `{"Width":80,"Height":24}`.
fn size_of(v: &serde_json::Value) -> Option<(u16, u16)> {
    let w = u16::try_from(v.get("Width")?.as_u64()?).ok()?;
    let h = u16::try_from(v.get("Height")?.as_u64()?).ok()?;
    Some((w, h))
}

fn parse_size(data: &[u8]) -> Option<(u16, u16)> {
    size_of(&serde_json::from_slice(data).ok()?)
}

// ---------------------------------------------------------------------------------------
// Exec over WebSocket.

pub async fn exec_websocket(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    container: String,
    req: ExecRequest,
    upgraded: Upgraded,
    v5: bool,
) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(EXEC_OUT_QUEUE);
    let abort = Arc::new(tokio::sync::Notify::new());
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
        let (tx, s) = stdin_pipe();
        (Some(tx), Some(s))
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
                Some(0) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data.slice(1..)).await;
                    }
                }
                Some(255) if v5 && data.get(1) == Some(&0) => stdin_tx = None,
                Some(4) => {
                    if let (Some(tx), Some(size)) = (&resize_tx, parse_size(&data[1..])) {
                        let _ = tx.send(size);
                    }
                }
                _ => {}
            }
        }
    });
    let tx = out_tx.clone();
    let (want_out, want_err, tty, attach) = (req.stdout, req.stderr, req.tty, req.attach);
    let pod = h.name.clone();
    let output: OutputFn = Arc::new(move |s, data| {
        let ch = match s {
            Stream::Stdout if want_out => 1u8,
            // With a TTY there is no separate stderr: it goes to the terminal.
            Stream::Stderr if tty && want_out => 1,
            Stream::Stderr if want_err => 2,
            _ => return no_wait(),
        };
        let message = move |piece: Bytes| {
            let mut m = Vec::with_capacity(piece.len() + 1);
            m.push(ch);
            m.extend_from_slice(&piece);
            Message::Binary(m.into())
        };
        if attach {
            let full =
                pieces(data).any(|p| matches!(tx.try_send(message(p)), Err(TrySendError::Full(_))));
            if full {
                too_slow(&pod);
                abort.notify_one();
            }
            return no_wait();
        }
        let tx = tx.clone();
        Box::pin(async move {
            for piece in pieces(data) {
                // An error is a client gone: the rest is dropped as it comes.
                if tx.send(message(piece)).await.is_err() {
                    break;
                }
            }
        })
    });
    let result = exec::exec_or_attach(
        &agent,
        &h,
        &container,
        &req,
        ExecIo {
            stdin,
            output,
            tty: req.tty,
            resize,
        },
    )
    .await;
    let mut status = vec![3u8];
    status.extend_from_slice(exit_status(&result).as_bytes());
    let _ = out_tx.send(Message::Binary(status.into())).await;
    // A close with a status: client-go treats a bare close (1005) as a read error.
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }));
    let _ = out_tx.send(close).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

/// An attach client fell [`EXEC_OUT_QUEUE`] messages behind: its session is cut.
fn too_slow(pod: &str) {
    tracing::warn!(
        %pod,
        "attach client reads more slowly than the container writes ({EXEC_OUT_QUEUE} messages pending): closing its connection"
    );
}

/// `data` in messages of at most [`OUT_CHUNK`] bytes (no copies).
fn pieces(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!data.is_empty()).then(|| data.split_to(data.len().min(OUT_CHUNK))))
}

// ---------------------------------------------------------------------------------------
// Exec over SPDY.

/// How long the client has to open the streams it asked for (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn exec_spdy(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    container: String,
    req: ExecRequest,
    upgraded: Upgraded,
) {
    let (sender, mut streams) = spdy::serve(TokioIo::new(upgraded));
    let mut ids: HashMap<String, spdy::IncomingStream> = HashMap::new();
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
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !expected.iter().all(|k| ids.contains_key(*k)) {
        match tokio::time::timeout_at(deadline, streams.recv()).await {
            Ok(Some(s)) => {
                let kind = s.header("streamtype").unwrap_or_default().to_string();
                ids.insert(kind, s);
            }
            _ => {
                tracing::debug!(pod = %h.name, "exec client did not open its streams");
                return;
            }
        }
    }
    let error_id = ids.get("error").map(|s| s.id);
    let out_id = ids.get("stdout").map(|s| s.id);
    let err_id = ids.get("stderr").map(|s| s.id);
    let stdin = match ids.remove("stdin") {
        Some(mut s) => {
            let (tx, pipe) = stdin_pipe();
            tokio::spawn(async move {
                while let Some(b) = s.data.recv().await {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
            });
            Some(pipe)
        }
        None => None,
    };
    let (resize_tx, resize) = resize_channel(req.tty);
    if let (Some(mut s), Some(tx)) = (ids.remove("resize"), resize_tx) {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(b) = s.data.recv().await {
                buf.extend_from_slice(&b);
                // client-go writes one JSON object per size; keep a partial one.
                let mut it =
                    serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
                let mut used = 0;
                while let Some(Ok(v)) = it.next() {
                    used = it.byte_offset();
                    if let Some(size) = size_of(&v) {
                        let _ = tx.send(size);
                    }
                }
                buf.drain(..used);
            }
        });
    }
    let out = sender.clone();
    let (tty, attach) = (req.tty, req.attach);
    let pod = h.name.clone();
    let output: OutputFn = Arc::new(move |s, data| {
        let id = match s {
            Stream::Stdout => out_id,
            Stream::Stderr if tty => out_id,
            Stream::Stderr => err_id,
        };
        let Some(id) = id else {
            return no_wait();
        };
        if attach {
            if pieces(data).any(|p| out.try_data(id, p).is_err()) {
                too_slow(&pod);
                out.abort();
            }
            return no_wait();
        }
        let out = out.clone();
        Box::pin(async move {
            for piece in pieces(data) {
                out.data(id, piece).await;
            }
        })
    });
    let result = exec::exec_or_attach(
        &agent,
        &h,
        &container,
        &req,
        ExecIo {
            stdin,
            output,
            tty,
            resize,
        },
    )
    .await;
    for id in [out_id, err_id].into_iter().flatten() {
        sender.finish(id).await;
    }
    if let Some(id) = error_id {
        if !matches!(result, Ok(0)) {
            sender.data(id, Bytes::from(exit_status(&result))).await;
        }
        sender.finish(id).await;
    }
    // Let the frames go out, then end the connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sender.go_away().await;
    drop(sender);
}

// ---------------------------------------------------------------------------------------
// Port-forward over SPDY (raw, or tunnelled in WebSocket).

/// Serves port-forward streams on a SPDY connection: each (data, error) pair with the
/// same `requestid` is one TCP connection to `ip:port` in the pod's network.
pub async fn port_forward<IO>(ip: IpAddr, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (sender, mut streams) = spdy::serve(io);
    let mut errors: HashMap<String, u32> = HashMap::new();
    while let Some(s) = streams.recv().await {
        let request = s.header("requestid").unwrap_or_default().to_string();
        match s.header("streamtype") {
            Some("error") => {
                errors.insert(request, s.id);
            }
            Some("data") => {
                let port = s.header("port").and_then(|p| p.parse::<u16>().ok());
                let error_id = errors.remove(&request);
                tokio::spawn(forward(ip, port, s, error_id, sender.clone()));
            }
            _ => {}
        }
    }
}

async fn forward(
    ip: IpAddr,
    port: Option<u16>,
    mut s: spdy::IncomingStream,
    error_id: Option<u32>,
    sender: spdy::Sender,
) {
    let fail = |msg: String| {
        let sender = &sender;
        let data_id = s.id;
        async move {
            if let Some(id) = error_id {
                sender.data(id, Bytes::from(msg)).await;
                sender.finish(id).await;
            }
            sender.finish(data_id).await;
        }
    };
    let Some(port) = port else {
        fail("port-forward: missing or invalid port header".into()).await;
        return;
    };
    let tcp = match tokio::net::TcpStream::connect((ip, port)).await {
        Ok(t) => t,
        Err(e) => {
            fail(format!(
                "an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod, uid : failed to connect to {ip}:{port}: {e}"
            )).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let id = s.id;
    let to_pod = async {
        while let Some(b) = s.data.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // Waits while the client is behind, so a fast pod is read no faster
                // than the client takes the data.
                Ok(n) => sender.data(id, Bytes::copy_from_slice(&buf[..n])).await,
            }
        }
        sender.finish(id).await;
    };
    tokio::join!(to_pod, from_pod);
    if let Some(e) = error_id {
        sender.finish(e).await;
    }
}

/// SPDY carried in WebSocket binary messages, as a byte stream.
pub fn websocket_bytes(upgraded: Upgraded) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    tokio::spawn(async move {
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut sink, mut source) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let inbound = async {
            while let Some(Ok(msg)) = source.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink
                            .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(inbound, outbound);
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_keeps_every_command_word() {
        let q: Vec<(String, String)> = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("tty", "false"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let r = ExecRequest::from_query(&q);
        assert_eq!(r.command, vec!["sh", "-c", "echo hi"]);
        assert!(r.stdin && r.stdout && !r.stderr && !r.tty);
    }

    #[test]
    fn exit_codes_become_kubelet_statuses() {
        assert_eq!(exit_status(&Ok(0)), r#"{"metadata":{},"status":"Success"}"#);
        let s: serde_json::Value = serde_json::from_str(&exit_status(&Ok(3))).expect("json");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
