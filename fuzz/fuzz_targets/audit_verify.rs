//! The audit log verifier on any file content: a verdict (whole, broken, unsealed) or an error,
//! never a panic. Random bytes must never verify as whole.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use maschera::audit::keys::ChainSecret;
use maschera::audit::verify::{Verdict, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join(maschera::audit::files::file_name(1));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let secret = ChainSecret::from_bytes(vec![7u8; 32]);
    let public = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
    for partial in [false, true] {
        if let Ok(report) = verify(std::slice::from_ref(&path), &secret, &public, partial) {
            assert_ne!(
                report.verdict,
                Verdict::Whole,
                "random bytes verified as whole"
            );
        }
    }
});
