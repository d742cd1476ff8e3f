//! Closing handshakes (issue 18): once both close frames have passed, the
//! server closes the TCP connection itself, at once (RFC 6455, 5.5.1 and
//! 7.1.1). After its own close frame it waits at most `CLOSE_TIMEOUT` for the
//! client's, and after a client's close at most that long for the client to
//! take what is still queued; then it closes the connection whether or not the
//! client answered or read.
//!
//! The clients here speak WebSocket by hand over a `TcpStream`: they answer a
//! close frame only when told to and never close or shut down their side, so
//! the end of the stream they read is the server's doing.

use crate::common::*;
use bytes::{Buf, BytesMut};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use taskwire::session::CLOSE_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How soon after the closing handshake the connection must end: well before
/// actix-http would end it on its own, when its client disconnect timeout
/// expires (a second, counted from a clock it updates every half second, so
/// never sooner than half a second).
const AT_ONCE: Duration = Duration::from_millis(250);

/// A description of the most characters allowed, so that a few hundred events
/// fill the kernel's socket buffers.
fn big_description() -> String {
    "d".repeat(20_000)
}

/// A frame from the server.
#[derive(Debug)]
enum Frame {
    Text(Value),
    Close(Option<u16>, String),
    /// Any other frame, by opcode.
    Other(u8),
}

/// A WebSocket client written by hand.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
    next_ref: i64,
}

impl Raw {
    async fn connect(addr: SocketAddr, token: &str) -> Raw {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Raw::upgrade(tcp, addr, token).await
    }

    /// A client whose receive buffer is a few KB, so that what the server
    /// sends while it does not read soon fills the kernel's buffers.
    async fn connect_tiny(addr: SocketAddr, token: &str) -> Raw {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        let tcp = TcpStream::from_std(socket.into()).unwrap();
        Raw::upgrade(tcp, addr, token).await
    }

    /// The opening handshake, then the hello.
    async fn upgrade(mut tcp: TcpStream, addr: SocketAddr, token: &str) -> Raw {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(WAIT, tcp.read_buf(&mut buf))
                .await
                .expect("no answer to the upgrade")
                .unwrap();
            assert!(n > 0, "the connection ended during the upgrade");
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.advance(end);
        let mut raw = Raw { tcp, buf, next_ref: 1 };
        let hello = raw.text().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        raw
    }

    /// Sends one frame, masked as a client's must be.
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.expect("send a frame");
    }

    async fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send(0x8, &payload).await;
    }

    /// The next whole frame; `None` when the stream ends first.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            let n = tokio::time::timeout(WAIT, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("no frame within the wait")
                .expect("the connection failed");
            if n == 0 {
                return None;
            }
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "the server masked a frame");
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        assert_ne!(b[0] & 0x80, 0, "the server fragmented a frame");
        self.buf.advance(at);
        let payload = self.buf.split_to(len);
        Some(match opcode {
            0x1 => Frame::Text(serde_json::from_slice(&payload).expect("server sent JSON")),
            0x8 => {
                let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                Frame::Close(code, reason)
            }
            other => Frame::Other(other),
        })
    }

    /// The next text frame, skipping pings.
    async fn text(&mut self) -> Value {
        loop {
            match self.frame().await {
                Some(Frame::Text(v)) => return v,
                Some(Frame::Other(0x9)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn request(&mut self, mut frame: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        frame["ref"] = json!(r);
        self.send(0x1, frame.to_string().as_bytes()).await;
        loop {
            let v = self.text().await;
            if v["type"] == "reply" && v["ref"] == r {
                return v;
            }
        }
    }

    async fn subscribe(&mut self, topic: &str) {
        let r = self.request(json!({"type": "subscribe", "topic": topic})).await;
        assert_eq!(r["ok"], true, "{r}");
    }

    /// Reads up to the server's close frame; its code and reason.
    async fn close_frame(&mut self) -> (Option<u16>, String) {
        loop {
            match self.frame().await {
                Some(Frame::Close(code, reason)) => return (code, reason),
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Reads the end of the stream: nothing more than that may come, and it
    /// must be the server's orderly close (a read of zero bytes), not a reset.
    /// Returns how long it took.
    async fn end(&mut self, within: Duration) -> Duration {
        let t0 = Instant::now();
        assert!(self.buf.is_empty(), "bytes after the close frame: {:?}", self.buf);
        let mut b = [0u8; 256];
        match tokio::time::timeout(within, self.tcp.read(&mut b)).await {
            Err(_) => panic!("the connection was still open {within:?} after the close"),
            Ok(Ok(0)) => t0.elapsed(),
            Ok(Ok(n)) => panic!("{n} bytes after the close frame"),
            Ok(Err(e)) => panic!("the connection failed instead of ending: {e}"),
        }
    }

    /// Reads what is left until the stream ends, as a client that comes back
    /// to a socket it stopped reading: the events, in seq order from `after`,
    /// perhaps the close frame, then the end (the last frame may be cut off).
    async fn drain_to_end(&mut self, mut after: i64) {
        loop {
            match self.parse() {
                Some(Frame::Text(v)) if v["type"] == "event" => {
                    assert_eq!(v["seq"], after + 1, "a gap before the end: {v}");
                    after += 1;
                    continue;
                }
                Some(Frame::Close(code, _)) => assert_eq!(code, Some(1013)),
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
            let n = tokio::time::timeout(WAIT, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("the stream did not end")
                .expect("the connection failed instead of ending");
            if n == 0 {
                return;
            }
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }
}

/// What a client does with the server's close frame.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    Answer,
    Ignore,
}

/// Reads up to the server's close frame, which must carry `code`, then answers
/// it or not. The server must end the connection at once after an answer, and
/// without one after waiting about `CLOSE_TIMEOUT` for it.
async fn closed_by_server(raw: &mut Raw, code: u16, then: Then) {
    let (got, reason) = raw.close_frame().await;
    assert_eq!(got, Some(code), "{reason}");
    match then {
        Then::Answer => {
            raw.send_close(code, "").await;
            let took = raw.end(AT_ONCE).await;
            eprintln!("{code} answered: the connection ended {took:?} after the answer");
        }
        Then::Ignore => {
            let took = raw.end(CLOSE_TIMEOUT + WAIT).await;
            eprintln!("{code} not answered: the connection ended {took:?} after the close frame");
            assert!(
                took >= CLOSE_TIMEOUT / 2,
                "the server did not wait for the client's close frame: it ended the connection after {took:?}"
            );
        }
    }
}

/// The state of the server's end of the connection from `client`, from the
/// kernel's table (`/proc/net/tcp`); `None` once it is gone.
fn server_end_state(server: SocketAddr, client: SocketAddr) -> Option<u8> {
    let hex = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port()),
        IpAddr::V6(_) => panic!("the tests listen on IPv4"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[1] == local && f[2] == remote).then(|| u8::from_str_radix(f[3], 16).unwrap())
    })
}

/// Waits until the server has closed its end of the connection from `client`
/// (it is no longer ESTABLISHED), while the client reads nothing. Only the
/// kernel can tell, so this looks at its table every few milliseconds.
async fn server_closes_its_end(server: SocketAddr, client: SocketAddr, within: Duration) -> Duration {
    const ESTABLISHED: u8 = 1;
    let t0 = Instant::now();
    while server_end_state(server, client) == Some(ESTABLISHED) {
        assert!(
            t0.elapsed() < within,
            "the server still holds the connection of a client that does not read, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// Creates tasks with a big description over REST.
async fn create_big_tasks(app: &TestApp, n: usize) {
    let description = big_description();
    for i in 0..n {
        let res = app
            .post(
                "/api/tasks",
                json!({"title": format!("big {i}"), "description": description}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
}

async fn closed_slow(app: &TestApp) -> f64 {
    let text = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    crate::child::metric_value(&text, "taskwire_sockets_closed_slow_total")
}

#[tokio::test]
async fn a_client_close_is_answered_and_the_connection_ends_at_once() {
    let app = spawn_app();
    let mut raw = Raw::connect(app.addr, &app.admin).await;
    raw.subscribe("tasks").await;
    raw.send_close(1000, "bye").await;
    let (code, reason) = raw.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (Some(1000), "bye"),
        "the close frame is echoed"
    );
    let took = raw.end(AT_ONCE).await;
    eprintln!("client close: the connection ended {took:?} after the echoed close frame");
}

/// A client that sends its close frame and then reads nothing, while more is
/// queued for it than the kernel's buffers hold: the server cannot send it its
/// answer, and closes the connection after `CLOSE_TIMEOUT` all the same.
#[tokio::test]
async fn a_client_that_closes_and_stops_reading_is_cut_off_after_the_timeout() {
    let app = spawn_app();
    let mut raw = Raw::connect_tiny(app.addr, &app.admin).await;
    raw.subscribe("tasks").await;
    // More than the socket buffers hold, less than the queue's bound.
    create_big_tasks(&app, 300).await;
    raw.send_close(1000, "bye").await;
    let took = server_closes_its_end(app.addr, raw.local_addr(), CLOSE_TIMEOUT + WAIT).await;
    eprintln!("the server closed its end {took:?} after the close frame of a client that stopped reading");
    assert_eq!(closed_slow(&app).await, 0.0, "the client was not closed as too slow");
}

#[tokio::test]
async fn a_close_for_a_frame_too_large_1009() {
    let app = spawn_app_with(|c| c.max_frame_bytes = 1024);
    for then in [Then::Answer, Then::Ignore] {
        let mut raw = Raw::connect(app.addr, &app.admin).await;
        let frame = json!({"type": "ping", "ref": 1, "pad": "p".repeat(2000)});
        raw.send(0x1, frame.to_string().as_bytes()).await;
        closed_by_server(&mut raw, 1009, then).await;
    }
}

#[tokio::test]
async fn a_close_for_a_revoked_token_1008() {
    let app = spawn_app();
    let res = app
        .post("/api/tokens", json!({"role": "member", "name": "doomed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let token: Value = res.json().await.unwrap();
    let secret = token["token"].as_str().unwrap();
    let mut answers = Raw::connect(app.addr, secret).await;
    let mut ignores = Raw::connect(app.addr, secret).await;
    let res = app
        .delete(&format!("/api/tokens/{}", token["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    tokio::join!(
        closed_by_server(&mut answers, 1008, Then::Answer),
        closed_by_server(&mut ignores, 1008, Then::Ignore),
    );
}

/// 1013 for one event larger than the queue's bound, which closes a socket at
/// once even while the client reads.
#[tokio::test]
async fn a_close_for_a_client_too_slow_1013() {
    let app = spawn_app_with(|c| c.max_queue_bytes = 8 * 1024);
    let mut answers = Raw::connect(app.addr, &app.admin).await;
    let mut ignores = Raw::connect(app.addr, &app.admin).await;
    answers.subscribe("tasks").await;
    ignores.subscribe("tasks").await;
    create_big_tasks(&app, 1).await;
    tokio::join!(
        closed_by_server(&mut answers, 1013, Then::Answer),
        closed_by_server(&mut ignores, 1013, Then::Ignore),
    );
}

#[tokio::test]
async fn a_close_at_shutdown_1001() {
    let mut app = spawn_app();
    let mut answers = Raw::connect(app.addr, &app.admin).await;
    let mut ignores = Raw::connect(app.addr, &app.admin).await;
    let stopping = tokio::task::spawn_blocking(move || app.stop());
    tokio::join!(
        closed_by_server(&mut answers, 1001, Then::Answer),
        closed_by_server(&mut ignores, 1001, Then::Ignore),
    );
    stopping.await.unwrap();
}

/// A client that never reads while events pile up past the queue's bound: it
/// is closed 1013, and though it cannot even take the close frame, the server
/// closes the connection after `CLOSE_TIMEOUT`. When it reads at last, it gets
/// a gap-free prefix of the events and the end of the stream.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_after_the_timeout() {
    let app = spawn_app_with(|c| c.max_queue_bytes = 256 * 1024);
    let mut slow = Raw::connect_tiny(app.addr, &app.admin).await;
    let r = slow.request(json!({"type": "subscribe", "topic": "tasks"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let start = r["data"]["seq"].as_i64().unwrap();
    // From here on nothing reads `slow` until the server closed its end.
    let mut created = 0;
    while closed_slow(&app).await == 0.0 {
        assert!(created < 1000, "20 MB of events and the client was not closed 1013");
        create_big_tasks(&app, 10).await;
        created += 10;
    }
    let took = server_closes_its_end(app.addr, slow.local_addr(), CLOSE_TIMEOUT + WAIT).await;
    eprintln!("1013 after {created} events; the server closed its end {took:?} later");
    slow.drain_to_end(start).await;
}
