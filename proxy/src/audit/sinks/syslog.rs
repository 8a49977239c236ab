//! Syslog output for SIEMs: each record as one RFC 5424 message (facility "log audit", severity notice,
//! or warning for refusals, errors, failed logins and lockouts), over UDP (one datagram each) or TCP
//! (octet-counting framing, RFC 6587).
//! Not for: receiving or parsing syslog.

use super::{Sealed, backoff};
use crate::audit::AuditError;
use crate::audit::record::{EventKind, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// RFC 5424 facility 13, "log audit".
const FACILITY: u8 = 13;
/// Private enterprise number used for the structured data id (the example number of RFC 5424).
const SD_ID: &str = "maschera@32473";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Udp(String),
    Tcp(String),
}

impl Target {
    pub fn parse(address: &str) -> Result<Target, AuditError> {
        if let Some(addr) = address.strip_prefix("udp://") {
            Ok(Target::Udp(addr.to_string()))
        } else if let Some(addr) = address.strip_prefix("tcp://") {
            Ok(Target::Tcp(addr.to_string()))
        } else {
            Err(AuditError::Config(format!(
                "syslog {address:?}: expected udp://host:port or tcp://host:port"
            )))
        }
    }
}

/// Printable ASCII without spaces, as RFC 5424 header fields require; `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

fn sd_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// One RFC 5424 message (without transport framing).
pub fn format_message(sealed: &Sealed) -> String {
    let record = &sealed.record;
    let warning = !matches!(record.event.outcome, Outcome::Ok | Outcome::Unknown)
        || matches!(
            record.event.kind,
            EventKind::LoginFailed | EventKind::Lockout
        );
    let severity = if warning { 4 } else { 5 };
    format!(
        "<{}>1 {} {} maschera {} {} [{} seq=\"{}\" instance=\"{}\"] {}",
        FACILITY * 8 + severity,
        header_field(&record.time, 64),
        header_field(&record.instance, 255),
        std::process::id(),
        header_field(record.event.kind.as_str(), 32),
        SD_ID,
        record.seq,
        sd_value(&record.instance),
        sealed.line
    )
}

enum Connection {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpStream),
}

async fn connect(target: &Target) -> std::io::Result<Connection> {
    match target {
        Target::Udp(addr) => {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
            socket.connect(addr).await?;
            Ok(Connection::Udp(socket))
        }
        Target::Tcp(addr) => Ok(Connection::Tcp(tokio::net::TcpStream::connect(addr).await?)),
    }
}

async fn send(connection: &mut Connection, message: &str) -> std::io::Result<()> {
    match connection {
        Connection::Udp(socket) => socket.send(message.as_bytes()).await.map(|_| ()),
        Connection::Tcp(stream) => {
            stream
                .write_all(format!("{} {message}", message.len()).as_bytes())
                .await
        }
    }
}

/// Sends records until the queue closes, reconnecting with a growing pause when the collector is away.
pub async fn run(target: Target, mut rx: mpsc::Receiver<Arc<Sealed>>) {
    let mut connection: Option<Connection> = None;
    let mut pause = Duration::ZERO;
    while let Some(sealed) = rx.recv().await {
        let message = format_message(&sealed);
        loop {
            let result = match connection.as_mut() {
                Some(c) => send(c, &message).await,
                None => match connect(&target).await {
                    Ok(mut c) => {
                        let r = send(&mut c, &message).await;
                        connection = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    pause = Duration::ZERO;
                    break;
                }
                Err(e) => {
                    connection = None;
                    pause = backoff(pause);
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "audit syslog sink failed");
                    if rx.is_closed() && pause >= Duration::from_secs(2) {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Event, Record};

    fn sealed(seq: u64, time: &str, instance: &str, event: Event) -> Sealed {
        let record = Record {
            seq,
            time: time.into(),
            instance: instance.into(),
            event,
            link: None,
            checkpoint: None,
        };
        Sealed {
            record,
            line: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[tokio::test]
    async fn tcp_messages_are_octet_counted() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::parse(&format!("tcp://{}", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run(target, rx));
        for seq in [1, 2] {
            tx.send(Arc::new(sealed(
                seq,
                "t",
                "i",
                Event::new(EventKind::Statement),
            )))
            .await
            .unwrap();
        }
        drop(tx);
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = String::new();
        socket.read_to_string(&mut received).await.unwrap();
        task.await.unwrap();
        let first = format_message(&sealed(1, "t", "i", Event::new(EventKind::Statement)));
        assert!(
            received.starts_with(&format!("{} {first}", first.len())),
            "{received}"
        );
        assert!(received.ends_with("{\"seq\":2}"), "{received}");
    }

    #[test]
    fn messages_follow_rfc_5424() {
        let mut event = Event::new(EventKind::LoginFailed);
        event.user = Some("anna".into());
        let message = format_message(&sealed(9, "2026-01-01T00:00:00Z", "proxy a\"]", event));
        let expected_start = "<108>1 2026-01-01T00:00:00Z proxya\"] maschera ";
        assert!(message.starts_with(expected_start), "{message}");
        assert!(
            message.ends_with(
                " login_failed [maschera@32473 seq=\"9\" instance=\"proxy a\\\"\\]\"] {\"seq\":9}"
            ),
            "{message}"
        );
        assert_eq!(
            Target::parse("tcp://h:1").unwrap(),
            Target::Tcp("h:1".into())
        );
        assert!(Target::parse("h:1").is_err());
    }
}
