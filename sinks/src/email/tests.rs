//! Email over SMTP: the message built for one receiver, and the server's replies as RFC 5321
//! and RFC 4954 write them (a refused login, an unknown mailbox, a busy server), classified by
//! their reply code. Attachments' address checks are here too.

use std::str::FromStr;

use lettre::transport::smtp::response::Response;

use super::*;
use crate::util::kit::test_batch;

fn account() -> Email {
    let config: EmailConfig = serde_json::from_value(serde_json::json!({
        "host": "smtp.example.com", "tls": "none", "from": "tidings <noreply@example.com>"
    }))
    .unwrap();
    Email::new(config, std::time::Duration::from_secs(5)).unwrap()
}

/// The reply code of an SMTP reply line, as the server sends it.
fn code(reply: &str) -> Option<Code> {
    Some(Response::from_str(reply).expect("an SMTP reply").code())
}

#[test]
fn one_message_per_receiver_with_the_message_id() {
    let b = test_batch(
        Channel::Email,
        r#"{"title":"周报","content":"<b>3</b> done"}"#,
    );
    let m = account()
        .payload("ops@example.com", "周报", "<b>3</b> done", &[], &b)
        .unwrap();
    let text = String::from_utf8(m.formatted()).unwrap();
    assert!(
        text.contains("From: tidings <noreply@example.com>\r\n"),
        "{text}"
    );
    assert!(text.contains("To: ops@example.com\r\n"), "{text}");
    assert!(text.contains("Message-ID: <m1@tidings>\r\n"), "{text}");
    assert!(
        text.contains("Content-Type: text/html; charset=utf-8"),
        "{text}"
    );
    // A receiver that is not an address fails alone, before any connection.
    let e = account()
        .payload("not an address", "s", "h", &[], &b)
        .unwrap_err();
    assert!(
        matches!(e, SendError::Permanent(r) if r.starts_with("email: receiver \"not an address\""))
    );
}

#[test]
fn an_attachment_travels_as_its_own_part() {
    let b = test_batch(Channel::Email, "{}");
    let file = (
        "report.csv".to_string(),
        b"a,b\n1,2\n".to_vec(),
        "text/csv".to_string(),
    );
    let m = account()
        .payload("ops@example.com", "s", "<p>see attached</p>", &[file], &b)
        .unwrap();
    let text = String::from_utf8(m.formatted()).unwrap();
    assert!(text.contains("Content-Type: multipart/mixed"), "{text}");
    assert!(
        text.contains("Content-Disposition: attachment; filename=\"report.csv\""),
        "{text}"
    );
}

#[test]
fn replies_are_classified_by_code() {
    let judge = |reply: &str| Email::judge(code(reply), format!("email: {reply}"));
    // RFC 4954: the credentials were refused, or authentication is required.
    assert!(matches!(
        judge("535 5.7.8 Authentication credentials invalid\r\n"),
        SendError::Unauthorized(_)
    ));
    assert!(matches!(
        judge("530 5.7.0 Authentication required\r\n"),
        SendError::Unauthorized(_)
    ));
    // A mailbox the server does not know: that receiver fails for good.
    assert!(matches!(
        judge("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\r\n"),
        SendError::Permanent(_)
    ));
    // Busy or rate limited (greylisting, too many recipients): tried again.
    assert!(matches!(
        judge("421 4.7.0 Try again later, closing connection\r\n"),
        SendError::Transient(_)
    ));
    assert!(matches!(
        judge("451 4.7.1 Please try again later\r\n"),
        SendError::Transient(_)
    ));
    // No reply at all (the connection or TLS failed).
    assert!(matches!(
        Email::judge(None, "email: connection refused".into()),
        SendError::Transient(_)
    ));
}

#[test]
fn the_settings_name_a_bad_sender_and_the_endpoint_follows_tls() {
    let mut c: EmailConfig = serde_json::from_value(serde_json::json!({
        "host": "smtp.example.com", "from": "not an address"
    }))
    .unwrap();
    let e = Email::validate("accounts.mail", &c).unwrap_err();
    assert!(
        e.starts_with("accounts.mail.settings.from: \"not an address\""),
        "{e}"
    );
    c.from = "a@b.c".into();
    assert!(Email::validate("accounts.mail", &c).is_ok());
    assert_eq!(Email::base_url(&c), "smtp://smtp.example.com:587");
    c.tls = TlsMode::Tls;
    assert_eq!(Email::base_url(&c), "smtp://smtp.example.com:465");
    c.port = Some(2525);
    assert_eq!(Email::base_url(&c), "smtp://smtp.example.com:2525");
}

#[test]
fn private_addresses_are_recognised() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        // An IPv4 address inside an IPv6 one: compatible, NAT64, 6to4.
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a00:1::5",
        "fec0::1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.254",
    ] {
        assert!(is_private(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "93.184.216.34",
        "2606:2800:220:1::1",
        "8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "198.20.0.1",
    ] {
        assert!(!is_private(ip.parse().unwrap()), "{ip}");
    }
}
