//! Guest stdout/stderr: every write is handed to the agent's [`OutputSink`] immediately, so
//! logs stream while the guest runs instead of appearing when it exits. A sink may ask
//! the guest to wait ([`OutputSink::write_or_wait`]): its next write then blocks, as a
//! process's write blocks on a full pipe.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where a guest's stdout or stderr goes. Called on the runtime's threads while the guest
/// is running, so it should not block for long.
pub trait OutputSink: Send + Sync + 'static {
    fn write(&self, data: &[u8]);

    /// Takes `data`, and when the sink's reader is behind returns what the guest's next
    /// write waits for (back-pressure; only the guest's own fiber waits, not the
    /// runtime's thread). The default never waits.
    fn write_or_wait(&self, data: Bytes) -> Option<Wait> {
        self.write(&data);
        None
    }
}

/// What a guest's next write waits for; see [`OutputSink::write_or_wait`].
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The largest single write a guest is offered. Guests split larger writes themselves;
/// the bound keeps one host call from handing the sink an unbounded buffer.
const MAX_WRITE: usize = 1 << 20;

pub(crate) struct SinkStream {
    sink: Arc<dyn OutputSink>,
    /// The wait of the last write, until it is over: no more is written meanwhile.
    /// In a mutex only to be `Sync` as wasmtime-wasi wants (a wait need not be);
    /// `&mut self` reaches it without locking.
    pending: std::sync::Mutex<Option<Wait>>,
}

impl SinkStream {
    pub(crate) fn new(sink: Arc<dyn OutputSink>) -> Self {
        SinkStream {
            sink,
            pending: std::sync::Mutex::new(None),
        }
    }

    fn pending(&mut self) -> &mut Option<Wait> {
        self.pending.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&mut self, data: Bytes) {
        *self.pending() = self.sink.write_or_wait(data);
    }

    /// Whether the last write's wait is over, polled without a waker: `ready` and
    /// `poll_write` are where the guest really waits.
    fn settled(&mut self) -> bool {
        let pending = self.pending();
        let Some(p) = pending.as_mut() else {
            return true;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if p.as_mut().poll(&mut cx).is_ready() {
            *pending = None;
        }
        pending.is_none()
    }
}

impl Clone for SinkStream {
    /// A new handle on the same sink; waits belong to the handle that wrote.
    fn clone(&self) -> Self {
        SinkStream::new(self.sink.clone())
    }
}

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    // Overridden because the default wraps `async_stream` in a buffering pipe with its
    // own background task; the sink is synchronous, so write straight through.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {
        if let Some(p) = self.pending().take() {
            p.await;
        }
    }
}

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !bytes.is_empty() {
            self.put(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // 0 makes wasmtime-wasi wait on `ready` before writing more.
        Ok(if self.settled() { MAX_WRITE } else { 0 })
    }
}

impl AsyncWrite for SinkStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let pending = self.pending();
        if let Some(p) = pending.as_mut() {
            if p.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *pending = None;
        }
        let n = buf.len().min(MAX_WRITE);
        if n > 0 {
            self.put(Bytes::copy_from_slice(&buf[..n]));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
