//! The one HTTP server of tidings: an axum [`Router`] served by hyper on a thread of its own
//! (with its own small tokio runtime, so a timely worker never runs it). The admin API and the
//! provider simulator are routers handed to [`Server::start`].
//!
//! Slow or idle clients cannot lock it out: a request's head must arrive within
//! [`HEAD_TIMEOUT`] (hyper's header-read timeout, which also closes a kept-alive connection
//! that sends nothing for that long), its body within [`BODY_TIMEOUT`], a body over
//! [`MAX_BODY`] is answered 413 from its `Content-Length` before anything is read, and a head
//! over [`MAX_HEAD`] is answered 431, and an answer the client stops reading is cut after
//! [`WRITE_TIMEOUT`] ([`WriteDeadline`]). Connections are tasks, not threads; past
//! [`MAX_CONNECTIONS`] a new connection is closed at once (idle ones leave within the head
//! timeout, so room comes back).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, oneshot};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// The longest a request's head may take, and a kept-alive connection may stay silent.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request's body may take after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body; a larger one is answered 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// The largest request head (request line and headers); a larger one is answered 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest an answer's write may wait for the client to read (a client that asks and
/// never reads would hold its connection, and a slot, for ever). A minute: Linux wakes a
/// blocked writer only once a third of the socket's send buffer has drained, which a client
/// reading slowly but steadily may take many seconds to do. (10 s in this crate's own tests,
/// which wait it out.)
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(if cfg!(test) { 10 } else { 60 });
/// How long a stop waits for the requests being answered (the send API's answer from the
/// broker takes at most 10 s, after a template change it waits for, which takes as long).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// A listening server.
pub struct Server {
    /// Its address (the real port when bound to port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A permit per connection not open.
    slots: Arc<Semaphore>,
}

impl Server {
    /// Binds `bind` and serves `router` until [`Server::stop`] (or drop).
    pub fn start(bind: impl std::net::ToSocketAddrs, router: Router) -> std::io::Result<Server> {
        Server::start_as(bind, router, true)
    }

    /// [`Server::start`] for a stand-in of servers reached under their own names (the
    /// provider simulator: a client signs `Host: sms.tencentcloudapi.com` and connects to
    /// 127.0.0.1): any `Host` is answered on loopback too.
    pub fn start_for_any_host(
        bind: impl std::net::ToSocketAddrs,
        router: Router,
    ) -> std::io::Result<Server> {
        Server::start_as(bind, router, false)
    }

    fn start_as(
        bind: impl std::net::ToSocketAddrs,
        router: Router,
        loopback_names_only: bool,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidings-http")
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let loopback = loopback_names_only && addr.ip().is_loopback();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let open = slots.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http {addr}"))
            .spawn(move || runtime.block_on(accept(listener, router, loopback, open, stopped)))?;
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            slots,
        })
    }

    /// The connections open now.
    pub fn connections(&self) -> usize {
        MAX_CONNECTIONS - self.slots.available_permits()
    }

    /// Stops listening, lets the requests being answered finish (at most [`STOP_GRACE`]) and
    /// closes every connection.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Refuses (403) a request that changes something when a browser says a page of another site
/// made it: a form or a `fetch` without CORS can post to any address, and the operators'
/// routes take no token on loopback by default. Browsers name the page's site in
/// `Sec-Fetch-Site` (or, older ones, its origin in `Origin`); clients that are not browsers
/// (curl, the CLI, producers) send neither and are let through, as is the console's own page.
///
/// On a loopback address, it also refuses (403) any request whose `Host` is not a loopback
/// name (`localhost`, `*.localhost`, a loopback address): a page of a site whose name was
/// pointed at 127.0.0.1 after it loaded (DNS rebinding) is of the same origin to the browser,
/// so it sends and reads with neither header above, and a loopback server takes no token.
async fn same_site_only(
    axum::extract::State(loopback): axum::extract::State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if loopback
        && let Some(host) = request.headers().get("host")
        && !names_loopback(host.to_str().unwrap_or(""))
    {
        let why = format!(
            "refused: Host {:?} is not a name of this machine's loopback, which this server \
             listens on (a site's name pointed at 127.0.0.1 by its DNS); reach it as \
             127.0.0.1 or localhost, or serve it on another address",
            String::from_utf8_lossy(host.as_bytes())
        );
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": why})),
        )
            .into_response();
    }
    let safe = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe && let Some(site) = cross_site(request.headers()) {
        let why = format!(
            "refused: a page of another site ({site}) made this browser send it; send it from \
             the console's own page, curl or the tidings CLI"
        );
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": why})),
        )
            .into_response();
    }
    next.run(request).await
}

/// Whether `host` (a `Host` header: a name or address, with or without a port) names the
/// loopback: `localhost` and its subdomains (browsers never ask DNS for them) or a loopback
/// address.
fn names_loopback(host: &str) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The other site a browser says a request came from, if it did.
fn cross_site(headers: &axum::http::HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        Some("same-origin" | "none") => return None,
        Some(other) => return Some(format!("Sec-Fetch-Site: {other}")),
        None => {}
    }
    let origin = get("origin")?;
    let Some((scheme, from)) = origin.split_once("://") else {
        return Some(format!("Origin: {origin}"));
    };
    // Host and port as compared: lower case, without the scheme's default port.
    let default = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    let plain = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        a.strip_suffix(default).map(str::to_string).unwrap_or(a)
    };
    let from = plain(from);
    // The server's own name: the Host a browser sent, or the one a proxy that rewrote it
    // says it had (`X-Forwarded-Host`, its first).
    let own = [
        get("host"),
        get("x-forwarded-host").and_then(|h| h.split(',').next()),
    ];
    if own.into_iter().flatten().any(|h| plain(h) == from) {
        None
    } else {
        Some(format!("Origin: {origin}"))
    }
}

/// Accepts connections until `stopped`; each is a task of its own.
async fn accept(
    listener: std::net::TcpListener,
    router: Router,
    loopback: bool,
    slots: Arc<Semaphore>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("http server: {e}");
            return;
        }
    };
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            loopback,
            same_site_only,
        ))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(RequestBodyLimitLayer::new(MAX_BODY));
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of descriptors and the like: wait a moment rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop_seen = stop_seen.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(WriteDeadline::new(stream)), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Stopping: an idle connection closes now, a request being answered first.
                _ = stop_seen.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    // Requests being answered finish (a send API caller gets the broker's answer to a record
    // already produced, rather than a reset it would retry), for at most STOP_GRACE.
    let _ = stopping.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(STOP_GRACE, finished).await;
    connections.abort_all();
}

/// A connection whose writes fail with `TimedOut` once one has waited [`WRITE_TIMEOUT`] for
/// room (the client reads nothing): hyper then closes it. Reads are as they are (hyper bounds
/// a head's; tower-http a body's).
struct WriteDeadline {
    stream: tokio::net::TcpStream,
    /// Set while a write waits for room; cleared by any progress.
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: tokio::net::TcpStream) -> WriteDeadline {
        WriteDeadline {
            stream,
            waiting: None,
        }
    }

    /// `poll` of the stream, unless it has waited too long: the deadline starts at the first
    /// `Pending` and ends at the first answer.
    fn bounded<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(
            std::pin::Pin<&mut tokio::net::TcpStream>,
            &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        match poll(std::pin::Pin::new(&mut self.stream), cx) {
            Poll::Ready(done) => {
                self.waiting = None;
                Poll::Ready(done)
            }
            Poll::Pending => {
                let waiting = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing of its answer for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.bounded(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.bounded(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.bounded(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.bounded(cx, |s, cx| s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use axum::routing::any;

    use super::*;

    fn echo_len() -> Router {
        Router::new().fallback(any(|body: axum::body::Bytes| async move {
            format!("{{\"got\":{}}}", body.len())
        }))
    }

    /// Sends `raw` and reads the answer until its body is complete or the server closes.
    fn ask(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may close before reading everything (a head too long): not an error.
        let _ = s.write_all(raw);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
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
        let server = Server::start("127.0.0.1:0", echo_len()).unwrap();
        let ok = ask(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(
            ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("{\"got\":3}"),
            "{ok}"
        );
        // A body far beyond the cap is refused from its length, before it is read.
        let big = ask(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999999\r\n\r\n",
        );
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        // A head without an end is cut at the head limit.
        let mut long = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 40_000));
        let cut = ask(server.addr, &long);
        assert!(cut.is_empty() || cut.starts_with("HTTP/1.1 431"), "{cut}");
        // Still serving.
        let again = ask(server.addr, b"GET /y HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(again.starts_with("HTTP/1.1 200 OK"), "{again}");
        server.stop();
    }

    /// A change a page of another site made a browser send is refused; the same request
    /// from the page's own site, or from a client that is not a browser, is served, and so
    /// is a read.
    #[test]
    fn a_change_another_sites_page_sends_is_refused() {
        let server = Server::start("127.0.0.1:0", echo_len()).unwrap();
        let post = |headers: &str| {
            ask(
                server.addr,
                format!("POST /jobs/a/stop HTTP/1.1\r\nHost: 127.0.0.1:7070\r\n{headers}Content-Length: 2\r\n\r\nab")
                    .as_bytes(),
            )
        };
        for refused in [
            "Sec-Fetch-Site: cross-site\r\n",
            "Sec-Fetch-Site: same-site\r\nOrigin: http://127.0.0.1:7070\r\n",
            "Origin: http://evil.example\r\n",
            "Origin: null\r\n",
            "Origin: http://127.0.0.1:8080\r\n",
        ] {
            let answer = post(refused);
            assert!(
                answer.starts_with("HTTP/1.1 403") && answer.contains("another site"),
                "{refused}: {answer}"
            );
        }
        for served in [
            "",
            "Sec-Fetch-Site: same-origin\r\n",
            "Sec-Fetch-Site: none\r\n",
            "Origin: http://127.0.0.1:7070\r\n",
            // Behind a proxy that rewrote Host and said what it was.
            "Origin: http://Console.example\r\nX-Forwarded-Host: console.example:80, p\r\n",
        ] {
            let answer = post(served);
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{served}: {answer}");
        }
        let read = ask(
            server.addr,
            b"GET /jobs HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: cross-site\r\n\r\n",
        );
        assert!(read.starts_with("HTTP/1.1 200 OK"), "{read}");
        server.stop();
    }

    /// A server on loopback answers only its loopback names: a page whose site's name was
    /// pointed at 127.0.0.1 (DNS rebinding) is refused, reads too, whatever else it sends.
    #[test]
    fn a_loopback_server_answers_only_loopback_names() {
        let server = Server::start("127.0.0.1:0", echo_len()).unwrap();
        for host in [
            "evil.example:7070",
            "evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
        ] {
            for method in ["GET", "POST"] {
                let answer = ask(
                    server.addr,
                    format!("{method} /jobs HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: same-origin\r\nContent-Length: 0\r\n\r\n")
                        .as_bytes(),
                );
                assert!(
                    answer.starts_with("HTTP/1.1 403") && answer.contains("loopback"),
                    "{method} {host}: {answer}"
                );
            }
        }
        for host in [
            "localhost:7070",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.2",
            "[::1]:7070",
        ] {
            let answer = ask(
                server.addr,
                format!("POST /jobs HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            );
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{host}: {answer}");
        }
        server.stop();
        // A stand-in of servers reached under their own names answers them.
        let server = Server::start_for_any_host("127.0.0.1:0", echo_len()).unwrap();
        let answer = ask(
            server.addr,
            b"GET /x HTTP/1.1\r\nHost: sms.tencentcloudapi.com\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        server.stop();
    }

    /// A request being answered when the server stops gets its answer; the stop then ends,
    /// without waiting for an idle connection.
    #[test]
    fn a_stop_lets_the_request_being_answered_finish() {
        let (started, start_seen) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(std::sync::Mutex::new(started));
        // The request is answered once the test releases it: after the stop has begun.
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let router = Router::new().fallback(any(move || {
            let (started, held) = (started.clone(), held.clone());
            async move {
                let _ = started.lock().unwrap().send(());
                held.notified().await;
                "done"
            }
        }));
        let server = Server::start("127.0.0.1:0", router).unwrap();
        let addr = server.addr;
        let mut idle = TcpStream::connect(addr).unwrap();
        let asking = std::thread::spawn(move || {
            ask(addr, b"POST /send HTTP/1.1\r\nHost: localhost\r\n\r\n")
        });
        start_seen.recv_timeout(Duration::from_secs(5)).unwrap();
        let stopping = Instant::now();
        let stopper = std::thread::spawn(move || server.stop());
        // The stop has begun when it closes the idle connection (at once, not at the head
        // timeout): then the request being answered is let finish.
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let closed = match idle.read(&mut [0u8; 16]) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        release.notify_one();
        stopper.join().unwrap();
        assert!(
            closed && stopping.elapsed() < Duration::from_secs(3),
            "{:?}",
            stopping.elapsed()
        );
        let answer = asking.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("done"),
            "{answer:?}"
        );
    }

    /// A client that asks for a large answer and reads none of it has its connection cut
    /// after the write timeout (it held a slot for ever): it reads what the sockets' buffers
    /// held, then the end, not the whole answer.
    #[test]
    fn an_answer_the_client_does_not_read_is_cut_at_the_write_timeout() {
        const BIG: usize = 64 * 1024 * 1024;
        let router = echo_len().route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }));
        let server = Server::start("127.0.0.1:0", router).unwrap();
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        // Nothing read until the server has taken the connection and then let it go (its
        // slot back).
        let waited = Instant::now();
        let wait_for = |open: usize| {
            while server.connections() != open {
                assert!(
                    waited.elapsed() < WRITE_TIMEOUT + Duration::from_secs(10),
                    "{} connection(s) open after {:?}, not {open}",
                    server.connections(),
                    waited.elapsed()
                );
                std::thread::park_timeout(Duration::from_millis(100));
            }
        };
        wait_for(1);
        wait_for(0);
        assert!(waited.elapsed() >= WRITE_TIMEOUT - Duration::from_secs(1));
        let (got, ended) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(ended, "the connection was left open after {got} bytes");
        assert!(got > 0 && got < BIG, "read {got} of {BIG} bytes");
        // The server still answers.
        let answer = ask(server.addr, b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        server.stop();
    }

    /// Reads `s` until the server closes it (`true`) or nothing comes for `quiet` (`false`):
    /// the bytes read, and which.
    fn read_until_closed(s: &mut TcpStream, quiet: Duration) -> (usize, bool) {
        s.set_read_timeout(Some(quiet)).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got += n,
                Err(e) => {
                    let closed = !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                    return (got, closed);
                }
            }
        }
    }

    /// 100 idle connections and 64 slow-loris ones (a byte of a head, then nothing) are held
    /// open; a request still gets its answer at once, and the slow heads are cut at the head
    /// timeout.
    #[test]
    fn idle_and_slow_connections_do_not_lock_the_server_out() {
        let server = Server::start("127.0.0.1:0", echo_len()).unwrap();
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
        let answer = ask(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "answered in {:?}",
            asked.elapsed()
        );
        // A slow head and an idle connection are each closed by the server within the head
        // timeout (read gives 0 or an error, never a hang past the bound).
        for s in [&mut slow[63], &mut held[99]] {
            let waited = Instant::now();
            // Whatever hyper says before closing (perhaps a 408), the connection ends.
            let (_, closed) = read_until_closed(s, HEAD_TIMEOUT + Duration::from_secs(5));
            assert!(
                closed && waited.elapsed() < HEAD_TIMEOUT + Duration::from_secs(2),
                "closed: {closed} after {:?}",
                waited.elapsed()
            );
        }
        drop((held, slow));
        server.stop();
    }
}
