//! `portforward.k8s.io`: kubectl opens, per forwarded connection, a pair of SPDY
//! streams with the same `requestid` (an `error` stream and a `data` stream naming the
//! `port`), each pair one TCP connection to that port in the pod's network. kubectl
//! 1.31 and later carry the same SPDY frames in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`).

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::spdy;
use crate::upgrade::{Negotiated, Transport};

/// WebSocket subprotocols of port-forward.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &["SPDY/3.1+portforward.k8s.io"];
/// SPDY stream protocol versions of port-forward.
pub const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// The most bytes read from a pod's connection at once (one DATA frame).
const READ_SIZE: usize = 32 << 10;

/// Serves a negotiated port-forward session into `ip`'s ports until it ends.
pub async fn serve_upgraded(n: Negotiated, ip: IpAddr) {
    let transport = n.transport;
    let Some(io) = n.upgraded().await else {
        return;
    };
    match transport {
        Transport::WebSocket => serve(ip, websocket_bytes(io)).await,
        Transport::Spdy => serve(ip, TokioIo::new(io)).await,
    }
}

/// Serves port-forward streams on a SPDY connection: each (data, error) pair with the
/// same `requestid` is one TCP connection to `ip:port`.
pub async fn serve<IO>(ip: IpAddr, io: IO)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
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

/// One forwarded connection: the data stream `s` to and from `ip:port`, failures
/// reported on the error stream as the kubelet words them.
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
        let mut buf = vec![0u8; READ_SIZE];
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
fn websocket_bytes(upgraded: Upgraded) -> tokio::io::DuplexStream {
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
            let mut buf = vec![0u8; READ_SIZE];
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
    use crate::spdy::{Deflater, Frame, Inflater};
    use bytes::BytesMut;
    use std::net::Ipv4Addr;
    use tokio::net::TcpListener;

    fn syn(id: u32, headers: &[(&str, &str)], def: &mut Deflater, out: &mut BytesMut) {
        let frame = Frame::SynStream {
            id,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fin: false,
        };
        spdy::encode(&frame, out, def).expect("encode");
    }

    /// The server's side of a connection, as frames.
    struct Reader<R> {
        rd: R,
        inf: Inflater,
        buf: BytesMut,
    }

    impl<R: AsyncRead + Unpin> Reader<R> {
        fn new(rd: R) -> Self {
            Reader {
                rd,
                inf: Inflater::default(),
                buf: BytesMut::new(),
            }
        }

        /// The next `n` data frames (FINs included).
        async fn data_frames(&mut self, n: usize) -> Vec<Frame> {
            let mut got = Vec::new();
            while got.len() < n {
                while let Some(f) = spdy::decode(&mut self.buf, &mut self.inf).expect("decode") {
                    if matches!(f, Frame::Data { .. }) {
                        got.push(f);
                    }
                }
                if got.len() >= n {
                    break;
                }
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    self.rd.read_buf(&mut self.buf),
                );
                let n = read.await.expect("the server went quiet").expect("read");
                assert!(n > 0, "closed after {got:?}");
            }
            got
        }
    }

    fn fin(id: u32) -> Frame {
        Frame::Data {
            id,
            data: Bytes::new(),
            fin: true,
        }
    }

    #[tokio::test]
    async fn a_stream_pair_is_one_connection_to_the_port() {
        let pod = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = pod.local_addr().expect("addr").port().to_string();
        tokio::spawn(async move {
            let (mut c, _) = pod.accept().await.expect("accept");
            let mut line = [0u8; 4];
            c.read_exact(&mut line).await.expect("read");
            c.write_all(&line.to_ascii_uppercase())
                .await
                .expect("write");
        });
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(Ipv4Addr::LOCALHOST.into(), server));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = Reader::new(rd);
        let (mut def, mut out) = (Deflater::default(), BytesMut::new());
        let h = |t| {
            [
                ("streamtype", t),
                ("port", port.as_str()),
                ("requestid", "0"),
            ]
        };
        syn(1, &h("error"), &mut def, &mut out);
        syn(3, &h("data"), &mut def, &mut out);
        let ping = Frame::Data {
            id: 3,
            data: Bytes::from_static(b"ping"),
            fin: false,
        };
        spdy::encode(&ping, &mut out, &mut def).expect("encode");
        wr.write_all(&out).await.expect("write");
        let pong = Frame::Data {
            id: 3,
            data: Bytes::from_static(b"PING"),
            fin: false,
        };
        // The pod closed its side: the data stream is half-closed.
        assert_eq!(rd.data_frames(2).await, [pong, fin(3)]);
        // Once the client has closed its side too, the error stream ends with no error.
        out.clear();
        spdy::encode(&fin(3), &mut out, &mut def).expect("encode");
        wr.write_all(&out).await.expect("write");
        assert_eq!(rd.data_frames(1).await, [fin(1)]);
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_on_the_error_stream() {
        // A port that was free a moment ago: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            l.local_addr().expect("addr").port().to_string()
        };
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(Ipv4Addr::LOCALHOST.into(), server));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = Reader::new(rd);
        let (mut def, mut out) = (Deflater::default(), BytesMut::new());
        syn(
            1,
            &[("streamtype", "error"), ("port", &port), ("requestid", "7")],
            &mut def,
            &mut out,
        );
        syn(
            3,
            &[("streamtype", "data"), ("port", &port), ("requestid", "7")],
            &mut def,
            &mut out,
        );
        wr.write_all(&out).await.expect("write");
        let got = rd.data_frames(3).await;
        let Frame::Data {
            id: 1,
            data,
            fin: false,
        } = &got[0]
        else {
            panic!("expected an error message first: {got:?}");
        };
        let msg = String::from_utf8_lossy(data);
        assert!(
            msg.starts_with(&format!("an error occurred forwarding {port} -> {port}")),
            "{msg}"
        );
        assert_eq!(got[1..], [fin(1), fin(3)]);
    }
}
