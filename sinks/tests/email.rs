//! Email over a real SMTP server (`scripts/services.sh start`: aiosmtpd on SMTP_ADDR, saving
//! each message under SMTP_DIR): the message arrives with its subject, HTML body and the
//! attachment fetched by URL; a receiver the server refuses fails alone with the server's
//! reply; attachment URLs to private addresses or other schemes are refused (austin #56).

mod common;

use std::path::PathBuf;

use common::send;
use tidings_model::Channel;
use tidings_sinks::SendBatch;
use tidings_sinks::account::Accounts;

fn smtp() -> (String, u16, PathBuf) {
    let addr = std::env::var("SMTP_ADDR").unwrap_or_else(|_| "127.0.0.1:12525".into());
    let (host, port) = addr.rsplit_once(':').unwrap();
    let dir = std::env::var("SMTP_DIR").unwrap_or_else(|_| "/tmp/tidings-services/mail".into());
    (host.to_string(), port.parse().unwrap(), dir.into())
}

fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{n}", std::process::id())
}

fn account(allow_private: bool) -> Accounts {
    let (host, port, _) = smtp();
    let text = format!(
        "[mail]\nchannel = \"email\"\nprovider = \"smtp\"\nattempts = 2\n\
         settings = {{ host = \"{host}\", port = {port}, tls = \"none\", from = \"tidings <noreply@example.com>\", allow_private_attachments = {allow_private} }}\n"
    );
    common::accounts(&text)
}

fn batch(url: &str, receivers: &[String]) -> SendBatch {
    let content = serde_json::json!({"title": "Your order", "content": "<p>Hello <b>Ann</b></p>", "url": url});
    common::batch(
        &format!("m-{}", unique()),
        Channel::Email,
        &content.to_string(),
        receivers,
    )
}

/// The saved message for `to`. The server writes each message before it answers 250, and a
/// send returns after that answer: what was sent is already on disk.
fn mail_for(to: &str) -> Option<String> {
    let (_, _, dir) = smtp();
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .find(|text| text.lines().next().is_some_and(|l| l.contains(to)))
}

/// Serves one file on 127.0.0.1 (for the rest of the test process); returns its URL.
fn serve_attachment() -> String {
    let router = axum::Router::new().route(
        "/report.txt",
        axum::routing::get(|| async { "attached-text-4711" }),
    );
    let server = tidings_sinks::util::server::Server::start("127.0.0.1:0", router).unwrap();
    let addr = server.addr;
    std::mem::forget(server);
    format!("http://{addr}/report.txt")
}

#[test]
fn mail_arrives_with_body_and_attachment_and_refusals_stay_per_receiver() {
    let url = serve_attachment();
    let id = unique();
    let ann = format!("ann-{id}@example.com");
    let refused = format!("reject-{id}@example.com");
    let out = send(
        &account(true),
        "mail",
        &batch(&url, &[ann.clone(), refused.clone()]),
    );
    assert_eq!(out[0], Ok(()), "{out:?}");
    let reason = out[1].as_ref().unwrap_err();
    assert!(reason.contains("550"), "{reason}");
    let mail = mail_for(&ann).expect("the message reached the SMTP server");
    assert!(mail.contains("Subject: Your order"), "{mail}");
    assert!(mail.contains("<b>Ann</b>"), "{mail}");
    assert!(
        mail.contains("report.txt") && mail.contains("attached-text-4711"),
        "{mail}"
    );
    assert!(mail_for(&refused).is_none());
}

#[test]
fn attachments_to_private_addresses_or_other_schemes_are_refused() {
    let url = serve_attachment();
    let id = unique();
    let bob = format!("bob-{id}@example.com");
    let out = send(
        &account(false),
        "mail",
        &batch(&url, std::slice::from_ref(&bob)),
    );
    assert!(
        out[0].as_ref().unwrap_err().contains("private or loopback"),
        "{out:?}"
    );
    let out = send(
        &account(true),
        "mail",
        &batch("file:///etc/passwd", std::slice::from_ref(&bob)),
    );
    assert!(
        out[0]
            .as_ref()
            .unwrap_err()
            .contains("scheme file is not allowed"),
        "{out:?}"
    );
    let out = send(
        &account(false),
        "mail",
        &batch(
            "http://169.254.169.254/latest/meta-data/",
            std::slice::from_ref(&bob),
        ),
    );
    assert!(
        out[0].as_ref().unwrap_err().contains("private or loopback"),
        "{out:?}"
    );
    assert!(mail_for(&bob).is_none(), "nothing was sent");
}

/// A server that accepts connections and never says a word (a stalled relay, a firewall that
/// holds the connection): each connection is counted and held open.
fn silent_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(c);
        }
    });
    (port, accepted)
}

/// lettre's timeout bounds the connect only: a server that accepts and then is silent held a
/// send (and `tidings check`) forever. Each receiver's SMTP transaction is bounded by the
/// account's `timeout_secs`, and once the server failed the receivers after are not tried
/// (each would wait out its own timeout): one connection per attempt, not per receiver.
#[test]
fn a_silent_server_fails_the_call_within_its_timeout_and_the_check_too() {
    let (port, accepted) = silent_server();
    let accounts = common::accounts(&format!(
        "[mail]\nchannel = \"email\"\nprovider = \"smtp\"\nattempts = 2\ntimeout_secs = 0.3\n\
         settings = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\", from = \"noreply@example.com\" }}\n"
    ));
    let receivers: Vec<String> = (0..3).map(|i| format!("r{i}@example.com")).collect();
    let out = send(&accounts, "mail", &batch("", &receivers));
    assert_eq!(out.len(), 3);
    for r in &out {
        let why = r.as_ref().unwrap_err();
        assert!(
            why.contains("did not finish answering within 0.3 s"),
            "{out:?}"
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one connection per attempt"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let checked = rt.block_on(accounts.get(accounts.index("mail").unwrap()).check());
    assert!(
        checked
            .as_ref()
            .is_err_and(|e| e.contains("did not finish answering")),
        "{checked:?}"
    );
}
