//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, against stored verifiers.
//! Not for: reading the users file or the wire protocol; it turns client messages into server messages.
//!
//! No channel binding: a client-first-message with gs2 header `n,,` or `y,,` is accepted, `p=` (the
//! client insists on binding) is refused, as is an authorization identity (`a=`), like PostgreSQL does
//! for the plain `SCRAM-SHA-256` mechanism. The user name inside the SCRAM message is ignored (the
//! startup message names the user). An unknown user runs the same exchange against a fake verifier so
//! that nothing in the answers or their cost tells whether the user exists.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::OnceLock;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The SASL mechanism name to offer in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations of a new verifier, as PostgreSQL's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Length of a new verifier's random salt, as PostgreSQL.
const SALT_LEN: usize = 16;
/// Raw bytes of the server's part of the nonce, as PostgreSQL.
const SERVER_NONCE_LEN: usize = 18;
/// Longest client message accepted; real ones are around 100 bytes.
const MAX_MESSAGE_LEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// A SCRAM-SHA-256 verifier in PostgreSQL's `pg_authid` format:
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow the protocol (SQLSTATE 08P01). Also used by
    /// [`Verifier::parse`] for a verifier text that is not in the `pg_authid` format.
    #[error("malformed SCRAM message: {0}")]
    Protocol(String),
    /// Wrong password or unknown user; deliberately indistinguishable (SQLSTATE 28P01).
    #[error("password authentication failed")]
    Failed,
}

fn protocol(reason: &str) -> ScramError {
    ScramError::Protocol(reason.to_string())
}

impl fmt::Debug for Verifier {
    /// Shows the parameters but not the keys: a verifier is secret enough to keep out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Derives a verifier from a password with a fresh random salt. The password is normalised with
    /// SASLprep when it can be, as PostgreSQL and its clients do. `iterations` of 0 counts as 1.
    pub fn from_password(password: &str, iterations: u32) -> Verifier {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Verifier::from_password_and_salt(password, salt, iterations)
    }

    /// Derives the same verifier from the same password and `context` every time (PostgreSQL's
    /// 4096 iterations): the salt is itself salted and iterated from both, so it tells no more about
    /// the password than the verifier does. For `policy apply`, which sets each login's password
    /// on every run without changing the catalog when the password is the same.
    pub fn stable_from_password(password: &str, context: &str) -> Verifier {
        const ITERATIONS: u32 = 4096;
        let normalized = normalize(password);
        let salt_salt = [b"maschera stable salt:".as_slice(), context.as_bytes()].concat();
        let salt =
            salted_password(normalized.as_bytes(), &salt_salt, ITERATIONS)[..SALT_LEN].to_vec();
        Verifier::from_password_and_salt(password, salt, ITERATIONS)
    }

    fn from_password_and_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        let iterations = iterations.max(1);
        let normalized = normalize(password);
        let salted = salted_password(normalized.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Parses the `pg_authid` text form.
    pub fn parse(text: &str) -> Result<Verifier, ScramError> {
        let bad = |what: &str| ScramError::Protocol(format!("invalid SCRAM verifier: {what}"));
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("it does not start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or_else(|| bad("expected <iterations>:<salt>$<StoredKey>:<ServerKey>"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| bad("expected <iterations>:<salt> before the $"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| bad("expected <StoredKey>:<ServerKey> after the $"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("the iteration count is not a positive number"))?;
        let salt = B64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("the salt is not base64"))?;
        let key = |text: &str, name: &str| -> Result<[u8; 32], ScramError> {
            B64.decode(text)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| bad(&format!("the {name} is not 32 bytes of base64")))
        };
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored_key, "StoredKey")?,
            server_key: key(server_key, "ServerKey")?,
        })
    }

    /// The `pg_authid` text form.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// A verifier for a user that does not exist: stable for a name within this process (so that
    /// two attempts see the same salt, as for a real user) and unpredictable without the process secret.
    fn fake_for(user: &str) -> Verifier {
        let derive = |label: &[u8]| {
            let mut mac = HmacSha256::new_from_slice(process_secret()).expect("any key length");
            mac.update(label);
            mac.update(&[0]);
            mac.update(user.as_bytes());
            <[u8; 32]>::from(mac.finalize().into_bytes())
        };
        Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: derive(b"salt")[..SALT_LEN].to_vec(),
            stored_key: derive(b"stored key"),
            server_key: derive(b"server key"),
        }
    }
}

/// Random per process, used only to derive fake verifiers.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        secret
    })
}

/// SASLprep when the password allows it, the raw text otherwise (PostgreSQL does the same).
fn normalize(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2-HMAC-SHA-256 with one output block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = HmacSha256::new_from_slice(password).expect("HMAC accepts any key length");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        result.iter_mut().zip(u).for_each(|(r, x)| *r ^= x);
    }
    result
}

/// One SCRAM exchange, after the client's first message.
pub struct ScramServer {
    verifier: Verifier,
    /// False when `verifier` is a fake one: the exchange then fails whatever the client sends.
    user_exists: bool,
    /// base64 of the gs2 header, which the client-final-message must echo in `c=`.
    channel_binding: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by the server's.
    nonce: String,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer").finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange from the client-first-message (the SASLInitialResponse data). `verifier` is
    /// `None` for an unknown user: the exchange then runs against a fake verifier derived from the
    /// user name so that the answer does not tell whether the user exists, and always fails.
    /// Returns the server-first-message to send in AuthenticationSASLContinue.
    pub fn start(
        user: &str,
        verifier: Option<&Verifier>,
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill_bytes(&mut server_nonce);
        Self::start_with_nonce(user, verifier, client_first, server_nonce)
    }

    fn start_with_nonce(
        user: &str,
        verifier: Option<&Verifier>,
        client_first: &[u8],
        server_nonce: [u8; SERVER_NONCE_LEN],
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let message = message_text(client_first)?;
        let (gs2_header, bare) = split_gs2_header(message)?;
        let client_nonce = client_nonce(bare)?;

        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let (verifier, user_exists) = match verifier {
            Some(v) => (v.clone(), true),
            None => (Verifier::fake_for(user), false),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let server = ScramServer {
            verifier,
            user_exists,
            channel_binding: B64.encode(gs2_header),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// Checks the client-final-message (SASLResponse data) and returns the server-final-message to
    /// send in AuthenticationSASLFinal.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let message = message_text(client_final)?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| protocol("the client-final-message has no proof (p=) at its end"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| protocol("the client-final-message does not start with c="))?;
        if binding != self.channel_binding {
            return Err(protocol("unexpected channel binding data"));
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| protocol("the client-final-message has no nonce (r=)"))?;
        if nonce != self.nonce {
            return Err(protocol("the nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| protocol("the proof is not 32 bytes of base64"))?;

        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        client_key
            .iter_mut()
            .zip(client_signature)
            .for_each(|(k, s)| *k ^= s);
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        let matches: bool = computed.ct_eq(&self.verifier.stored_key).into();
        if !(matches && self.user_exists) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

fn message_text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(protocol("the message is too long"));
    }
    std::str::from_utf8(message).map_err(|_| protocol("the message is not UTF-8"))
}

/// Splits `n,,n=...,r=...` into the gs2 header (`n,,`) and the client-first-message-bare.
fn split_gs2_header(message: &str) -> Result<(&str, &str), ScramError> {
    let rest = match message.as_bytes().first() {
        Some(b'n' | b'y') => &message[1..],
        Some(b'p') => return Err(protocol("channel binding (p=) is not supported")),
        _ => return Err(protocol("the gs2 header must start with n or y")),
    };
    let rest = rest
        .strip_prefix(',')
        .ok_or_else(|| protocol("comma expected after the channel binding flag"))?;
    if rest.starts_with("a=") {
        return Err(protocol("an authorization identity is not supported"));
    }
    let bare = rest
        .strip_prefix(',')
        .ok_or_else(|| protocol("comma expected after the gs2 header"))?;
    let header_len = message.len() - bare.len();
    Ok((&message[..header_len], bare))
}

/// The client's nonce from the client-first-message-bare `n=<user>,r=<nonce>[,extensions]`.
fn client_nonce(bare: &str) -> Result<&str, ScramError> {
    let mut attributes = bare.split(',');
    match attributes.next() {
        Some(a) if a.starts_with("m=") => {
            return Err(protocol("mandatory extensions are not supported"));
        }
        Some(a) if a.starts_with("n=") => {}
        _ => return Err(protocol("the client-first-message has no user name (n=)")),
    }
    let nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| protocol("the client-first-message has no nonce (r=)"))?;
    let printable = |b: u8| (0x21..=0x7e).contains(&b) && b != b',';
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err(protocol("the client nonce is empty or not printable"));
    }
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stable_verifier_is_the_same_for_the_same_password_and_context_only() {
        let first = Verifier::stable_from_password("s3cret-password", "maschera_sales");
        assert_eq!(
            first,
            Verifier::stable_from_password("s3cret-password", "maschera_sales")
        );
        assert_eq!(first.iterations, 4096);
        assert_eq!(first.salt.len(), SALT_LEN);
        // It is a verifier of that password: the same keys from its salt.
        assert_eq!(
            first,
            Verifier::from_password_and_salt("s3cret-password", first.salt.clone(), 4096)
        );
        assert_ne!(
            first,
            Verifier::stable_from_password("s3cret-password", "maschera_support")
        );
        let other = Verifier::stable_from_password("another-password", "maschera_sales");
        assert_ne!(first.salt, other.salt);
        assert_ne!(first.stored_key, other.stored_key);
    }

    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Produced by PostgreSQL 15 for `CREATE ROLE alice LOGIN PASSWORD 'correct horse battery staple'`.
    const POSTGRES_VERIFIER: &str = "SCRAM-SHA-256$4096:m+hEOw5Ek7dsLHoh0k1D9A==$\
        ZSe5wntAODYH6WiZIklkcJxpTb20NKZ1ufj/iCBqtWw=:FPF7iV5Ww6olN7W6aJH1CRLTfX5sXu7b5uJASuHg3Kg=";
    const POSTGRES_PASSWORD: &str = "correct horse battery staple";

    /// Runs a whole exchange with the real client code of postgres-protocol; `Ok` only when both the
    /// server accepted the client's proof and the client accepted the server's signature.
    fn exchange(
        verifier: Option<&Verifier>,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let (server, server_first) = ScramServer::start("alice", verifier, client.message())?;
        client
            .update(&server_first)
            .expect("the client accepts the server-first-message");
        let server_final = server.finish(client.message())?;
        client
            .finish(&server_final)
            .expect("the client accepts the server signature");
        Ok(())
    }

    #[test]
    fn right_password_is_accepted_and_the_server_proves_itself() {
        let verifier = Verifier::from_password("s3cret-enough-passphrase", 4096);
        for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            assert_eq!(
                exchange(Some(&verifier), "s3cret-enough-passphrase", binding),
                Ok(())
            );
        }
    }

    #[test]
    fn wrong_password_fails() {
        let verifier = Verifier::from_password("s3cret-enough-passphrase", 4096);
        let result = exchange(
            Some(&verifier),
            "s3cret-enough-passphrasf",
            ChannelBinding::unsupported(),
        );
        assert_eq!(result, Err(ScramError::Failed));
    }

    #[test]
    fn unknown_user_fails_and_looks_like_a_real_user() {
        assert_eq!(
            exchange(None, "anything", ChannelBinding::unsupported()),
            Err(ScramError::Failed)
        );
        let first = b"n,,n=,r=abcdefghijkl";
        let (_, a) = ScramServer::start("ghost", None, first).unwrap();
        let (_, b) = ScramServer::start("ghost", None, first).unwrap();
        let (_, c) = ScramServer::start("other", None, first).unwrap();
        let salt_and_iterations = |m: &[u8]| {
            let text = String::from_utf8(m.to_vec()).unwrap();
            text.split_once(",s=").unwrap().1.to_string()
        };
        assert_eq!(
            salt_and_iterations(&a),
            salt_and_iterations(&b),
            "stable per user"
        );
        assert_ne!(
            salt_and_iterations(&a),
            salt_and_iterations(&c),
            "differs between users"
        );
        assert!(salt_and_iterations(&a).ends_with(",i=4096"));
        assert_eq!(
            a.len(),
            ScramServer::start("alice", Some(&Verifier::from_password("x", 4096)), first)
                .unwrap()
                .1
                .len()
        );
    }

    #[test]
    fn postgres_verifier_verifies_its_password() {
        let verifier = Verifier::parse(POSTGRES_VERIFIER).unwrap();
        assert_eq!(verifier.to_text(), POSTGRES_VERIFIER);
        assert_eq!(
            exchange(
                Some(&verifier),
                POSTGRES_PASSWORD,
                ChannelBinding::unsupported()
            ),
            Ok(())
        );
        assert_eq!(
            exchange(
                Some(&verifier),
                "correct horse battery stapler",
                ChannelBinding::unsupported()
            ),
            Err(ScramError::Failed)
        );
        let salt = verifier.salt.clone();
        assert_eq!(
            Verifier::from_password_and_salt(POSTGRES_PASSWORD, salt, 4096),
            verifier
        );
    }

    #[test]
    fn verifier_text_round_trips_and_other_iterations_work() {
        let verifier = Verifier::from_password("another long passphrase", 10);
        assert_eq!(Verifier::parse(&verifier.to_text()).unwrap(), verifier);
        assert_eq!(
            exchange(
                Some(&verifier),
                "another long passphrase",
                ChannelBinding::unsupported()
            ),
            Ok(())
        );
        assert!(!format!("{verifier:?}").contains(&B64.encode(verifier.stored_key)));
    }

    #[test]
    fn malformed_verifiers_are_refused() {
        let good = Verifier::from_password("pw", 1).to_text();
        let (head, keys) = good.rsplit_once('$').unwrap();
        for bad in [
            "",
            "md5abcdef",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:abc",
            &good.replace("SCRAM-SHA-256$1:", "SCRAM-SHA-256$0:"),
            &good.replace("SCRAM-SHA-256$1:", "SCRAM-SHA-256$x:"),
            &format!("{head}$AAAA:{}", keys.split_once(':').unwrap().1),
            &format!("{head}$%%%:{}", keys.split_once(':').unwrap().1),
            &format!("{head}${keys}x"),
        ] {
            assert!(
                matches!(Verifier::parse(bad), Err(ScramError::Protocol(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn malformed_client_first_messages_are_protocol_errors() {
        let verifier = Verifier::from_password("pw", 1);
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,a=alice,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,x=abc",
            b"n,,n=,r=ab\x01c",
            b"n,,n=,r=\xff\xfe",
            &[b'a'; 10_000],
        ];
        for case in cases {
            let result = ScramServer::start("alice", Some(&verifier), case);
            assert!(
                matches!(result, Err(ScramError::Protocol(_))),
                "{:?} must be a protocol error",
                String::from_utf8_lossy(case)
            );
        }
    }

    /// Every truncation and every single-byte change of a real client's messages gives an error, never a panic.
    #[test]
    fn damaged_messages_never_panic_nor_pass() {
        let verifier = Verifier::from_password("pw", 1);
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let start = || ScramServer::start_with_nonce("alice", Some(&verifier), &first, [7; 18]);
        let (server, server_first) = start().unwrap();
        client.update(&server_first).unwrap();
        let last = client.message().to_vec();
        assert!(
            server.finish(&last).is_ok(),
            "the undamaged exchange passes"
        );

        let variants = |message: &[u8]| {
            let mut all: Vec<Vec<u8>> = (0..message.len()).map(|n| message[..n].to_vec()).collect();
            for i in 0..message.len() {
                for byte in [b',', b'=', 0, 0xff, message[i] ^ 1] {
                    let mut changed = message.to_vec();
                    changed[i] = byte;
                    if changed != message {
                        all.push(changed);
                    }
                }
            }
            all
        };
        for damaged in variants(&first) {
            let _ = ScramServer::start("alice", Some(&verifier), &damaged);
        }
        for damaged in variants(&last) {
            let (server, _) = start().unwrap();
            let result = server.finish(&damaged);
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(&damaged));
        }
    }

    #[test]
    fn malformed_client_final_messages_are_protocol_errors() {
        let verifier = Verifier::from_password("pw", 1);
        let start = || {
            let (server, first) =
                ScramServer::start("alice", Some(&verifier), b"n,,n=,r=abc").unwrap();
            let nonce = String::from_utf8(first).unwrap()[2..]
                .split(',')
                .next()
                .unwrap()
                .to_string();
            (server, nonce)
        };
        let proof = B64.encode([0u8; 32]);
        // NONCE stands for the nonce of each exchange.
        let cases = [
            String::new(),
            "c=biws,r=NONCE".to_string(),
            format!("r=NONCE,p={proof}"),
            format!("c=eSws,r=NONCE,p={proof}"),
            format!("c=biws,r=NONCEx,p={proof}"),
            format!("c=biws,p={proof}"),
            "c=biws,r=NONCE,p=AAAA".to_string(),
            "c=biws,r=NONCE,p=%%%".to_string(),
        ];
        for case in cases {
            let (server, nonce) = start();
            let case = case.replace("NONCE", &nonce);
            let result = server.finish(case.as_bytes());
            assert!(
                matches!(result, Err(ScramError::Protocol(_))),
                "{case:?} must be a protocol error"
            );
        }
        let (server, nonce) = start();
        let wrong_proof = format!("c=biws,r={nonce},p={proof}");
        assert_eq!(
            server.finish(wrong_proof.as_bytes()),
            Err(ScramError::Failed)
        );
    }
}
