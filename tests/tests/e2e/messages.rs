//! Client messages as the enforcing hooks decode them (`wire::frontend`, once per message): a
//! message that does not decode is refused by the proxy with a reason, for restricted and
//! unrestricted roles alike, and the session goes on. Not for: frames the relay cannot split
//! (`wire.rs`: 08P01 and the connection closes).

use maschera_tests::Fixture;
use maschera_tests::crm_proxy::{CRM_DB, crm_password};
use maschera_tests::proxy::{raw_login, read_message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends `bytes` and reads the answers up to ReadyForQuery: the ErrorResponse's fields (if any,
/// NULs as spaces) and the tags of the messages.
async fn round(stream: &mut TcpStream, bytes: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(bytes).await.expect("send");
    let (mut error, mut tags) = (String::new(), Vec::new());
    loop {
        let (tag, body) = read_message(stream).await;
        tags.push(tag);
        match tag {
            b'E' => error = String::from_utf8_lossy(&body).replace('\0', " "),
            b'Z' => return (error, tags),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_refused_with_a_reason_and_the_session_goes_on() {
    let crm = Fixture::crm(20).start().await.expect("the CRM fixture");
    // sam's role is restricted (sales), dora's is not (dpo).
    for user in ["sam", "dora"] {
        let mut stream = raw_login(crm.proxy.port(), user, &crm_password(user), CRM_DB).await;
        // An Execute cut short (its row count lacks three bytes), then Sync.
        let cut_short = b"E\0\0\0\x07p\0\0S\0\0\0\x04";
        let (error, tags) = round(&mut stream, cut_short).await;
        assert!(
            error.contains("C0A000") && error.contains("'E' message is malformed"),
            "{user}: {error}"
        );
        assert_eq!(tags.last(), Some(&b'Z'), "{user}: {tags:?}");
        // Text after a Query's terminator is not dropped silently: the Query is refused.
        let (error, _) = round(&mut stream, b"Q\0\0\0\x0fSELECT 1\0x\0").await;
        assert!(
            error.contains("C0A000") && error.contains("'Q' message is malformed"),
            "{user}: {error}"
        );
        // The session goes on.
        let (error, tags) = round(&mut stream, b"Q\0\0\0\x0dSELECT 1\0").await;
        assert_eq!(error, "", "{user}");
        assert_eq!(tags, b"TDCZ", "{user}");
    }
}
