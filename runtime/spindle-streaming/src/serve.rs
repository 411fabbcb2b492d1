//! Serving an HTTPS endpoint that anyone on the network can reach without letting them
//! hold it (SPN-08): a cap on connections (those over it are closed at once), a time
//! limit on the TLS handshake and on a request's headers, and an accept loop that rests
//! after errors such as EMFILE instead of spinning.
//!
//! [`accept_loop`] and [`AcceptBackoff`] are independent of what is served over the
//! connection, so that the API server's port can use them too; [`serve`] adds TLS and
//! HTTP/1.1 with upgrades, for the node's streaming endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client, authenticated or not, may hold of an endpoint.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accept to the end of the TLS handshake (Go's `TLSHandshakeTimeout` default).
    pub handshake_timeout: Duration,
    /// For a request's headers to arrive, idle keep-alive time included (hyper's
    /// default; HTTP/1.1 only, so an idle connection cannot escape it).
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted. Well
    /// under the process's open-files limit, which the API server, the store and every
    /// Wasm pod of the node share.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Go's net/http answer to accept errors (EMFILE above all): wait 5 ms, doubling up to
/// 1 s, instead of retrying at once, which spins a core and floods the log while the
/// process is out of descriptors.
#[derive(Debug, Default)]
pub struct AcceptBackoff(Option<Duration>);

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The next pause after an error, and the loop's new state.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.0.map_or(Self::MIN, |d| (d * 2).min(Self::MAX));
        self.0 = Some(delay);
        delay
    }

    /// Rests after accept error `e`.
    pub async fn wait(&mut self, e: &std::io::Error) {
        let delay = self.next_delay();
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
        tokio::time::sleep(delay).await;
    }

    /// An accept succeeded: the next error starts from the shortest pause again.
    pub fn reset(&mut self) {
        self.0 = None;
    }
}

/// Accepts connections on `listener` for ever, at most `max_connections` served at
/// once: `serve` runs (in a task of its own) for each, and its slot is freed when the
/// future ends.
pub async fn accept_loop<F, Fut>(listener: TcpListener, max_connections: usize, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        };
        backoff.reset();
        // Over the cap a connection is closed at once (dropped), not queued: a flood
        // then costs one descriptor for a moment each, and the slots free up as the
        // handshake and header timeouts end the stalled connections that hold them.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = max_connections, "too many connections: closed");
            continue;
        };
        let conn = serve(tcp, peer);
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    }
}

/// The client's certificate chain as the TLS handshake received it (end entity first;
/// empty without one), in every request's extensions. Nothing is verified beyond the
/// handshake's proof that the client holds the key: whoever reads it checks the chain.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// Serves `service` on `listener`: TLS with `tls`, then HTTP/1.1 (upgrades allowed),
/// within `limits`; each request carries [`PeerCertificates`].
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    service: S,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    let max = limits.max_connections;
    accept_loop(listener, max, move |tcp, _| {
        serve_connection(tls.clone(), tcp, limits.clone(), service.clone())
    })
    .await
}

async fn serve_connection<S, B>(
    tls: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    limits: Limits,
    service: S,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Ok(Ok(stream)) = tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await
    else {
        return;
    };
    let peer = PeerCertificates(Arc::new(
        stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    ));
    let service = tower::ServiceExt::map_request(service, move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        req
    });
    // Without a timer hyper silently ignores header_read_timeout.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_slots_come_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        // Each connection is held until its client writes a byte, then answered.
        tokio::spawn(accept_loop(listener, 2, move |mut tcp, _| {
            let _ = started_tx.send(());
            async move {
                let mut b = [0u8; 1];
                if tcp.read_exact(&mut b).await.is_ok() {
                    let _ = tcp.write_all(b"k").await;
                }
            }
        }));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(addr).await.expect("connect"));
            started.recv().await.expect("served");
        }
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let mut b = [0u8; 1];
        assert!(
            matches!(extra.read(&mut b).await, Ok(0) | Err(_)),
            "closed at once"
        );
        assert!(started.try_recv().is_err(), "served over the cap");
        let mut first = held.remove(0);
        first.write_all(b"x").await.expect("write");
        first.read_exact(&mut b).await.expect("answer");
        // The freed slot serves a new client (once the loop has seen it freed).
        for attempt in 0.. {
            let mut again = TcpStream::connect(addr).await.expect("connect");
            let served = async {
                again.write_all(b"x").await?;
                again.read_exact(&mut b).await
            };
            if served.await.is_ok() {
                break;
            }
            assert!(attempt < 100, "no slot came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
