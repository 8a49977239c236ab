//! The tamper evidence of the access log: a keyed hash chain whose key evolves forward, and the signed
//! checkpoints that seal it.
//! Not for: files, records or I/O; this is arithmetic on bytes shared by the writer and the verifier.
//!
//! Each line is `{...record...,"mac":"<hex>"}` where
//! `mac_n = HMAC-SHA256(key_n, mac_{n-1} || record_n)` (32 zero bytes before the first record) and
//! `key_{n+1} = SHA-256(key_n || "next")`, the old key overwritten. A process that leaks its current key
//! cannot recompute any earlier MAC. Each proxy start opens an epoch whose first key is
//! `HMAC-SHA256(secret, "maschera-audit-epoch-v1" || nonce)`; the auditor who holds the secret recomputes
//! everything. Checkpoints sign the chain head with ed25519, so the public key alone proves them.

#![allow(
    unsafe_code,
    reason = "erase zeroes secret bytes with write_volatile so the optimiser keeps the writes"
)]

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// A MAC or chain head.
pub type Mac32 = [u8; 32];

/// The MAC before the first record of a chain.
pub const GENESIS: Mac32 = [0; 32];

const EPOCH_LABEL: &[u8] = b"maschera-audit-epoch-v1";
const CHECKPOINT_LABEL: &[u8] = b"maschera-audit-checkpoint-v1";
const MAC_SUFFIX_PREFIX: &str = ",\"mac\":\"";

/// The current key of the chain. Overwritten when it advances and when dropped.
pub struct ChainKey([u8; 32]);

impl ChainKey {
    /// The first key of an epoch.
    pub fn epoch(secret: &[u8], nonce: &[u8]) -> Self {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(EPOCH_LABEL);
        mac.update(nonce);
        Self(mac.finalize().into_bytes().into())
    }

    /// Moves to the next key and erases the current one.
    pub fn advance(&mut self) {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(b"next");
        let next: [u8; 32] = hasher.finalize().into();
        erase(&mut self.0);
        self.0 = next;
    }

    /// The MAC of a record that follows `prev`.
    pub fn mac(&self, prev: &Mac32, body: &[u8]) -> Mac32 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(prev);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// A copy kept only while a group of records is not yet durable (to roll back on a write error).
    pub(crate) fn snapshot(&self) -> Self {
        Self(self.0)
    }
}

impl Drop for ChainKey {
    fn drop(&mut self) {
        erase(&mut self.0);
    }
}

/// Overwrites secret bytes in a way the optimiser keeps.
pub fn erase(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Appends the line for a serialized record `body` (a JSON object) and its MAC to `out`.
pub fn seal_into(out: &mut String, body: &str, mac: &Mac32) {
    debug_assert!(body.ends_with('}') && body.len() > 2);
    out.push_str(&body[..body.len() - 1]);
    out.push_str(MAC_SUFFIX_PREFIX);
    let mut hex_mac = [0u8; 64];
    // 64 bytes hold the hex of 32 bytes, and hex digits are ASCII: neither step can fail.
    if hex::encode_to_slice(mac, &mut hex_mac).is_ok()
        && let Ok(hex_mac) = std::str::from_utf8(&hex_mac)
    {
        out.push_str(hex_mac);
    }
    out.push_str("\"}");
}

/// Splits a line (without its newline) into the record's JSON as it was MACed, and the MAC.
pub fn unseal(line: &str) -> Option<(String, Mac32)> {
    let suffix_len = MAC_SUFFIX_PREFIX.len() + 64 + 2;
    if line.len() < suffix_len + 2 || !line.is_char_boundary(line.len() - suffix_len) {
        return None;
    }
    let (head, suffix) = line.split_at(line.len() - suffix_len);
    let hex_mac = suffix
        .strip_prefix(MAC_SUFFIX_PREFIX)?
        .strip_suffix("\"}")?;
    let mut mac = [0u8; 32];
    hex::decode_to_slice(hex_mac, &mut mac).ok()?;
    Some((format!("{head}}}"), mac))
}

/// The bytes a checkpoint signs: its sequence number, the chain head, the file and the instance.
pub fn checkpoint_message(
    seq: u64,
    head: &Mac32,
    file: &str,
    records_in_file: u64,
    instance: &str,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHECKPOINT_LABEL.len() + 64 + file.len() + instance.len());
    msg.extend_from_slice(CHECKPOINT_LABEL);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(head);
    msg.extend_from_slice(&records_in_file.to_be_bytes());
    msg.extend_from_slice(&(file.len() as u64).to_be_bytes());
    msg.extend_from_slice(file.as_bytes());
    msg.extend_from_slice(instance.as_bytes());
    msg
}

/// Signs a checkpoint message; hex.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    hex::encode(key.sign(message).to_bytes())
}

/// Whether `signature_hex` is `key`'s signature of `message`.
pub fn signature_valid(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> bool {
    let mut bytes = [0u8; 64];
    if hex::decode_to_slice(signature_hex, &mut bytes).is_err() {
        return false;
    }
    key.verify(message, &Signature::from_bytes(&bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal_give_back_the_body_and_mac() {
        let body = r#"{"seq":1,"x":"é"}"#;
        let mac = [7u8; 32];
        let mut line = String::new();
        seal_into(&mut line, body, &mac);
        assert!(line.ends_with(&format!(",\"mac\":\"{}\"}}", hex::encode(mac))));
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
        assert_eq!(unseal(&line), Some((body.to_string(), mac)));
        assert_eq!(unseal(r#"{"seq":1}"#), None);
        assert_eq!(unseal(&line[..line.len() - 1]), None);
    }

    #[test]
    fn the_key_evolves_and_each_key_gives_a_different_mac() {
        let mut key = ChainKey::epoch(b"secret", b"nonce");
        let first = key.mac(&GENESIS, b"{}");
        key.advance();
        let second = key.mac(&GENESIS, b"{}");
        assert_ne!(first, second);
        let again = ChainKey::epoch(b"secret", b"nonce");
        assert_eq!(
            again.mac(&GENESIS, b"{}"),
            first,
            "deterministic from the secret and nonce"
        );
        assert_ne!(
            ChainKey::epoch(b"other", b"nonce").mac(&GENESIS, b"{}"),
            first
        );
        assert_ne!(
            again.mac(&[1; 32], b"{}"),
            first,
            "the previous MAC is chained in"
        );
    }

    #[test]
    fn checkpoint_signatures_verify_only_with_the_matching_key_and_message() {
        let signing = SigningKey::from_bytes(&[3; 32]);
        let msg = checkpoint_message(5, &[1; 32], "audit-1.jsonl", 4, "i");
        let sig = sign(&signing, &msg);
        assert!(signature_valid(&signing.verifying_key(), &msg, &sig));
        let other = checkpoint_message(5, &[2; 32], "audit-1.jsonl", 4, "i");
        assert!(!signature_valid(&signing.verifying_key(), &other, &sig));
        let stranger = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(!signature_valid(&stranger, &msg, &sig));
        assert!(!signature_valid(&signing.verifying_key(), &msg, "zz"));
    }
}
