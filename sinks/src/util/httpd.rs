//! A small HTTP/1.1 server for the provider simulator and the admin API: a thread per
//! connection (at most [`MAX_CONNECTIONS`] at once), keep-alive, `Content-Length` bodies.
//! (tiny_http's task pool sometimes left a new connection's task queued with no thread to run
//! it until another connection arrived: a 10 s stall, i.e. a client timeout, then a retried
//! duplicate. Both servers have few connections, so a thread each is the simple answer.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
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
        let open = Arc::new(AtomicUsize::new(0));
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed
                }
                let (handler, open) = (handler.clone(), open.clone());
                std::thread::spawn(move || {
                    // Given back even if the handler panics.
                    let _slot = Slot(open);
                    let _ = serve(stream, &*handler);
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

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream or when the
/// line is longer (the connection is then closed).
fn read_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
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

fn serve(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
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
        reader.read_exact(&mut body)?;
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
}
