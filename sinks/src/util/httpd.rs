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
                    let _ = serve(stream, &*handler);
                    open.fetch_sub(1, Ordering::AcqRel);
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        405 => "Method Not Allowed",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
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
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed the connection
        }
        let mut parts = line.split_whitespace();
        let (method, url) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
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
