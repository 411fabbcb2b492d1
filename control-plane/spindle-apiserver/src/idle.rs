//! Idle connections on the API port are closed, as Go's `http.Server` and `http2.Server`
//! do with kube-apiserver's IdleTimeout (90 s).
//!
//! hyper has no idle timeout for HTTP/2, and for HTTP/1.1 only a header read timeout,
//! so a connection is watched here: it counts the requests in flight (from the moment
//! the service is called until the response body is sent or dropped, so a long watch is
//! busy throughout) and remembers when that count last fell to zero. A connection idle
//! for longer than the timeout is shut down gracefully (GOAWAY on HTTP/2, close between
//! requests on HTTP/1.1); one that does not finish closing while still idle is dropped,
//! because a peer that never completes the HTTP/2 preface or never reads keeps hyper's
//! graceful shutdown pending.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::Instant;

/// How long a connection told to close may stay idle before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

struct State {
    in_flight: usize,
    /// When `in_flight` last became zero, or the connection started.
    idle_since: Instant,
}

/// The requests in flight on one connection.
#[derive(Clone)]
pub(crate) struct Activity(Arc<Mutex<State>>);

impl Activity {
    pub(crate) fn new() -> Self {
        Activity(Arc::new(Mutex::new(State {
            in_flight: 0,
            idle_since: Instant::now(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain numbers, valid even if a holder panicked.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub(crate) fn busy(&self) -> Busy {
        self.state().in_flight += 1;
        Busy(self.clone())
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let s = self.state();
        (s.in_flight == 0).then_some(s.idle_since)
    }

    /// Resolves once the connection has had no request in flight for `timeout`,
    /// counting from `not_before` at the earliest.
    async fn idle_for(&self, timeout: Duration, not_before: Instant) {
        loop {
            let now = Instant::now();
            let wake = match self.idle_since() {
                Some(since) => {
                    let deadline = since.max(not_before) + timeout;
                    if now >= deadline {
                        return;
                    }
                    deadline
                }
                // A request in flight can only end; checking again a timeout later
                // is soon enough and costs one wake-up per period.
                None => now + timeout,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in flight.
pub(crate) struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
        }
    }
}

impl Busy {
    /// `resp` with this request kept in flight until its body is sent or dropped.
    pub(crate) fn until_sent(self, resp: Response) -> Response {
        resp.map(|body| {
            Body::new(HeldBody {
                body,
                busy: Some(self),
            })
        })
    }
}

/// A response body that holds its request's [`Busy`] guard.
struct HeldBody {
    body: Body,
    busy: Option<Busy>,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Sent in full: idle from now even if the body is dropped later.
            self.busy = None;
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `conn` until it ends, or until it has been idle for `idle_timeout`; then
/// `shutdown` (hyper's graceful shutdown) closes it.
pub(crate) async fn serve_until_idle<C>(
    conn: C,
    shutdown: fn(Pin<&mut C>),
    activity: &Activity,
    idle_timeout: Duration,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        () = activity.idle_for(idle_timeout, Instant::now()) => {}
    }
    tracing::debug!(?idle_timeout, "idle connection: closing");
    shutdown(conn.as_mut());
    tokio::select! {
        res = conn.as_mut() => res,
        () = activity.idle_for(CLOSE_GRACE, Instant::now()) => {
            tracing::debug!("idle connection did not close: dropped");
            Ok(())
        }
    }
}
