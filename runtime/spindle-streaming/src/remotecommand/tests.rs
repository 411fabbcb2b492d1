use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::spdy::{Deflater, Frame, Inflater};

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

fn request(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        command: vec!["sh".into()],
        stdin,
        stdout,
        stderr,
        tty,
        attach: false,
    }
}

type Client = WebSocketStream<tokio::io::DuplexStream>;

async fn websocket_pair(req: &ExecRequest, v5: bool) -> (Session, Client) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let session = websocket(server, req, v5).await;
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    (session, client)
}

async fn next_binary(client: &mut Client) -> Vec<u8> {
    match client.next().await {
        Some(Ok(Message::Binary(b))) => b.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// v5: stdin until the client closes its channel, output on channels 1 and 2, the
/// exit Status on 3, then a normal close.
#[tokio::test]
async fn websocket_session_carries_each_channel() {
    let (mut s, mut client) = websocket_pair(&request(true, true, true, false), true).await;
    client
        .send(Message::Binary(b"\x00hello".to_vec().into()))
        .await
        .expect("send");
    client
        .send(Message::Binary(vec![channel::CLOSE, channel::STDIN].into()))
        .await
        .expect("send");
    let mut stdin = s.stdin.take().expect("stdin asked for");
    assert_eq!(stdin.recv().await, Some(Bytes::from_static(b"hello")));
    assert_eq!(stdin.recv().await, None, "the client closed stdin");
    s.output
        .write(StdStream::Stdout, Bytes::from_static(b"out"))
        .await;
    s.output
        .write(StdStream::Stderr, Bytes::from_static(b"err"))
        .await;
    let done = tokio::spawn(s.finish::<String>(&Ok(2)));
    assert_eq!(next_binary(&mut client).await, b"\x01out");
    assert_eq!(next_binary(&mut client).await, b"\x02err");
    let status = next_binary(&mut client).await;
    assert_eq!(status[0], channel::ERROR);
    let status: serde_json::Value = serde_json::from_slice(&status[1..]).expect("json");
    assert_eq!(status["reason"], "NonZeroExitCode");
    match client.next().await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected a close with a code, got {other:?}"),
    }
    // Reading on sends the close reply, which ends the session.
    assert!(client.next().await.is_none());
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the session ends at the close reply")
        .expect("finished");
}

/// With a TTY stderr goes to the terminal (stdout); terminal sizes come from channel 4.
#[tokio::test]
async fn websocket_tty_merges_stderr_and_reads_sizes() {
    let (mut s, mut client) = websocket_pair(&request(false, true, true, true), false).await;
    assert!(s.stdin.is_none());
    let mut sized = br#"_{"Width":100,"Height":30}"#.to_vec();
    sized[0] = channel::RESIZE;
    client
        .send(Message::Binary(sized.into()))
        .await
        .expect("send");
    let mut resize = s.resize.take().expect("a TTY has sizes");
    assert_eq!(resize.recv().await, Some((100, 30)));
    s.output
        .write(StdStream::Stderr, Bytes::from_static(b"e"))
        .await;
    assert_eq!(next_binary(&mut client).await, b"\x01e");
}

/// An attach's output never waits: a client that stops reading overflows the queue.
#[tokio::test]
async fn attach_output_overflows_instead_of_waiting() {
    let (s, _client) = websocket_pair(&request(false, true, false, false), true).await;
    let chunk = Bytes::from(vec![b'x'; OUT_CHUNK]);
    let overflowed = (0..OUT_QUEUE * 64).any(|_| {
        s.output
            .try_write(StdStream::Stdout, chunk.clone())
            .is_err()
    });
    assert!(
        overflowed,
        "{} MiB queued for a client that reads nothing",
        (OUT_QUEUE * 64 * OUT_CHUNK) >> 20
    );
    // Output the client did not ask for is dropped, never an overflow.
    assert!(s.output.try_write(StdStream::Stderr, chunk).is_ok());
}

fn syn(id: u32, kind: &str, def: &mut Deflater, out: &mut BytesMut) {
    let frame = Frame::SynStream {
        id,
        headers: vec![("streamtype".into(), kind.into())],
        fin: false,
    };
    spdy::encode(&frame, out, def).expect("encode");
}

/// SPDY: the session starts once the client has opened the streams it asked for; a
/// successful command closes the error stream without a Status.
#[tokio::test]
async fn spdy_session_waits_for_its_streams() {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (mut rd, mut wr) = tokio::io::split(client);
    let req = request(true, true, false, false);
    let session = tokio::spawn(async move { spdy(server, &req).await });
    let (mut def, mut out) = (Deflater::default(), BytesMut::new());
    syn(1, "error", &mut def, &mut out);
    syn(3, "stdin", &mut def, &mut out);
    syn(5, "stdout", &mut def, &mut out);
    let data = Frame::Data {
        id: 3,
        data: Bytes::from_static(b"in"),
        fin: true,
    };
    spdy::encode(&data, &mut out, &mut def).expect("encode");
    wr.write_all(&out).await.expect("write");
    let mut s = session.await.expect("task").expect("session");
    let mut stdin = s.stdin.take().expect("stdin");
    assert_eq!(stdin.recv().await, Some(Bytes::from_static(b"in")));
    assert_eq!(stdin.recv().await, None);
    s.output
        .write(StdStream::Stdout, Bytes::from_static(b"out"))
        .await;
    s.finish::<String>(&Ok(0)).await;
    let (mut inf, mut buf, mut got) = (Inflater::default(), BytesMut::new(), Vec::new());
    while !got.contains(&Frame::GoAway) {
        assert!(
            rd.read_buf(&mut buf).await.expect("read") > 0,
            "closed early"
        );
        while let Some(f) = spdy::decode(&mut buf, &mut inf).expect("decode") {
            if !matches!(f, Frame::SynReply { .. }) {
                got.push(f);
            }
        }
    }
    let fin = |id| Frame::Data {
        id,
        data: Bytes::new(),
        fin: true,
    };
    let out = Frame::Data {
        id: 5,
        data: Bytes::from_static(b"out"),
        fin: false,
    };
    assert_eq!(got, [out, fin(5), fin(1), Frame::GoAway]);
}

/// A client that sends a ping after the command ended but before it has read the
/// output (client-go pings every few seconds) still gets all of it: the session
/// reads the client's frames until its close reply instead of closing a socket
/// with unread input, which the kernel would answer with a reset that discards
/// the output still queued.
#[tokio::test]
async fn a_client_that_pings_while_behind_gets_all_output() {
    const OUTPUT: usize = 1 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (io, _) = listener.accept().await.expect("accept");
        let session = websocket(io, &request(false, true, false, false), true).await;
        session
            .output
            .write(StdStream::Stdout, Bytes::from(vec![b'x'; OUTPUT]))
            .await;
        session.finish::<String>(&Ok(0)).await;
    });
    let io = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut client = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    // The output fits the socket buffers, so the session ends while this client
    // reads nothing; its ping arrives after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .send(Message::Ping(Bytes::from_static(b"hb")))
        .await
        .expect("ping");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stdout = 0;
    let mut status = None;
    loop {
        match client.next().await {
            Some(Ok(Message::Binary(m))) if m.first() == Some(&channel::STDOUT) => {
                stdout += m.len() - 1
            }
            Some(Ok(Message::Binary(m))) if m.first() == Some(&channel::ERROR) => {
                status = Some(String::from_utf8_lossy(&m[1..]).into_owned())
            }
            // Reading on after the server's close sends the reply.
            Some(Ok(_)) => {}
            None => break,
            Some(Err(e)) => panic!("after {stdout} of {OUTPUT} bytes: {e}"),
        }
    }
    assert_eq!(stdout, OUTPUT);
    let status = status.expect("an exit status");
    assert!(status.contains("Success"), "{status}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the session ends after the close reply")
        .expect("server task");
}
