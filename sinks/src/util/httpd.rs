//! A small HTTP/1.1 server for the provider simulator and the admin API: a thread per
//! connection (at most [`MAX_CONNECTIONS`] at once), keep-alive, `Content-Length` bodies.
//!
//! Slow or idle clients cannot lock it out: a request's head must arrive within
//! [`HEAD_TIMEOUT`] of its first byte and its body within [`BODY_TIMEOUT`]; a kept-alive
//! connection is closed after [`IDLE_TIMEOUT`] without a request; and when every slot is taken
//! a new connection closes the longest idle one (else the longest in the middle of a head) to
//! make room, never one whose request is being answered.
//! (tiny_http's task pool sometimes left a new connection's task queued with no thread to run
//! it until another connection arrived: a 10 s stall, i.e. a client timeout, then a retried
//! duplicate. Both servers have few connections, so a thread each is the simple answer.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Request {
    /// A header's value (`""` when absent); names compare case-insensitively.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Connections served at once; past it a new one closes the longest idle one.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest a request's head may take from its first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request's body may take after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an answer may take to be taken by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request line or header line.
const MAX_LINE: u64 = 8 * 1024;
/// The most headers of one request.
const MAX_HEADERS: usize = 100;
/// The largest request body; a larger one is answered 413 and the connection closed.
pub const MAX_BODY: usize = 1024 * 1024;

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// Answers one request.
pub type Handler = dyn Fn(Request) -> Response + Send + Sync;

/// A listening server.
pub struct Server {
    /// Its address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `bind` and answers every request with `handler`.
    pub fn start(
        bind: impl std::net::ToSocketAddrs,
        handler: Arc<Handler>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let conns = Arc::new(Mutex::new(Conns::default()));
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Ok(id) = lock(&conns).admit(&stream) else {
                    continue; // every slot answering a request: dropped, closed
                };
                let (handler, conns) = (handler.clone(), conns.clone());
                std::thread::spawn(move || {
                    // Given back even if the handler panics.
                    let slot = Slot { conns, id };
                    let _ = serve(stream, &*handler, &slot);
                });
            }
        });
        Ok(Server {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// Stops accepting (open connections end when their clients close them).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// What a connection is doing, for choosing one to close when every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request (since).
    Idle(Instant),
    /// Reading a request's head or body (since its first byte).
    Reading(Instant),
    /// Its request is being answered: never closed to make room.
    Answering,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, (TcpStream, Phase)>,
}

fn lock(c: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conns {
    /// Takes a slot for `stream`, closing the longest idle connection (else the one longest
    /// in the middle of a request) when all are taken; `Err` when every one is answering.
    fn admit(&mut self, stream: &TcpStream) -> Result<u64, ()> {
        if self.open.len() >= MAX_CONNECTIONS {
            let victim = self
                .open
                .iter()
                .filter_map(|(id, (_, phase))| match phase {
                    Phase::Idle(t) => Some(((0, *t), *id)),
                    Phase::Reading(t) => Some(((1, *t), *id)),
                    Phase::Answering => None,
                })
                .min()
                .map(|(_, id)| id)
                .ok_or(())?;
            if let Some((s, _)) = self.open.remove(&victim) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let id = self.next;
        self.next += 1;
        let clone = stream.try_clone().map_err(|_| ())?;
        self.open.insert(id, (clone, Phase::Idle(Instant::now())));
        Ok(id)
    }
}

struct Slot {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Slot {
    fn set(&self, phase: Phase) {
        if let Some((_, p)) = lock(&self.conns).open.get_mut(&self.id) {
            *p = phase;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.conns).open.remove(&self.id);
    }
}

/// A stream whose every read must end by a deadline (a slow client cannot stretch it by
/// sending a byte at a time).
struct Timed {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream or when the
/// line is longer (the connection is then closed).
fn read_line(reader: &mut BufReader<Timed>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 || !buf.ends_with(b"\n") {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        405 => "Method Not Allowed",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, handler: &Handler, slot: &Slot) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(Timed {
        stream,
        deadline: Instant::now() + IDLE_TIMEOUT,
    });
    loop {
        slot.set(Phase::Idle(Instant::now()));
        reader.get_mut().deadline = Instant::now() + IDLE_TIMEOUT;
        if reader.fill_buf()?.is_empty() {
            return Ok(()); // closed by the client
        }
        let started = Instant::now();
        slot.set(Phase::Reading(started));
        reader.get_mut().deadline = started + HEAD_TIMEOUT;
        let Some(line) = read_line(&mut reader)? else {
            return Ok(()); // closed by the client, or a line too long
        };
        let mut parts = line.split_whitespace();
        let (method, url) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let Some(h) = read_line(&mut reader)? else {
                return Ok(());
            };
            if headers.len() >= MAX_HEADERS {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut request = Request {
            method,
            url,
            headers,
            body: String::new(),
        };
        let length: usize = request.header("Content-Length").parse().unwrap_or(0);
        if length > MAX_BODY {
            let _ = writer.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Ok(());
        }
        let mut body = vec![0u8; length];
        reader.get_mut().deadline = Instant::now() + BODY_TIMEOUT;
        reader.read_exact(&mut body)?;
        slot.set(Phase::Answering);
        request.body = String::from_utf8_lossy(&body).into_owned();
        let close = request.header("Connection").eq_ignore_ascii_case("close");
        let r = handler(request);
        // One write per answer (and no Nagle delay): several small writes of one answer
        // would wait for the client's delayed ACK, ~40 ms each.
        let mut out = Vec::with_capacity(r.body.len() + 128);
        write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n{}",
            r.status,
            reason(r.status),
            r.content_type,
            r.body.len(),
            if close { "Connection: close\r\n" } else { "" },
            r.body
        )?;
        writer.write_all(&out)?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may close before reading everything (a line too long): not an error here.
        let _ = s.write_all(raw);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the answer's body is complete or the server closes.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn answers_keeps_alive_and_refuses_oversized_requests() {
        let server = Server::start(
            "127.0.0.1:0",
            Arc::new(|r: Request| Response::json(200, format!("{{\"got\":{}}}", r.body.len()))),
        )
        .unwrap();
        let ok = ask(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(
            ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("{\"got\":3}"),
            "{ok}"
        );
        // A body far beyond the cap is refused before anything is allocated for it.
        let big = ask(
            server.addr,
            b"POST /x HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
        );
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        // A header line without an end is cut at the line limit: the connection closes.
        let mut long = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 20_000));
        assert_eq!(ask(server.addr, &long), "");
        // Still serving.
        let again = ask(server.addr, b"GET /y HTTP/1.1\r\n\r\n");
        assert!(again.starts_with("HTTP/1.1 200 OK"), "{again}");
        server.stop();
    }

    /// 100 idle connections and 64 slow-loris ones (a byte of a head, then nothing) are held
    /// open; a request still gets its answer at once, and the slow heads are cut at the head
    /// timeout.
    #[test]
    fn idle_and_slow_connections_do_not_lock_the_server_out() {
        let server = Server::start(
            "127.0.0.1:0",
            Arc::new(|_: Request| Response::json(200, "{}".into())),
        )
        .unwrap();
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(TcpStream::connect(server.addr).unwrap());
        }
        let mut slow = Vec::new();
        for _ in 0..64 {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"G").unwrap();
            slow.push(s);
        }
        let asked = Instant::now();
        let answer = ask(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "answered in {:?}",
            asked.elapsed()
        );
        // Each slow head is closed by the server within the head timeout (read gives 0 or an
        // error, never a hang past the bound).
        let s = &mut slow[63];
        s.set_read_timeout(Some(HEAD_TIMEOUT + Duration::from_secs(5)))
            .unwrap();
        let waited = Instant::now();
        let mut buf = [0u8; 16];
        let got = s.read(&mut buf);
        assert!(
            matches!(got, Ok(0) | Err(_))
                && waited.elapsed() < HEAD_TIMEOUT + Duration::from_secs(2),
            "{got:?} after {:?}",
            waited.elapsed()
        );
        drop((held, slow));
        server.stop();
    }
}
