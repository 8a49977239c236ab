//! The opening of a connection: the StartupMessage parameters and the SCRAM-SHA-256 exchange
//! (client-first, client-final, and the stored verifier text), on any bytes. Never a panic; a
//! random client-final never authenticates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maschera::net::scram::{ScramServer, Verifier};
use maschera::net::startup;
use std::sync::OnceLock;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::from_password("fuzz-password", 1))
}

fuzz_target!(|data: &[u8]| {
    let _ = startup::parse_params(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Verifier::parse(text);
    }
    // The input is client-first and client-final, split at the first 0xff byte.
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    for known in [Some(verifier()), None] {
        if let Ok((server, _server_first)) = ScramServer::start("alice", known, first) {
            assert!(
                server.finish(last).is_err(),
                "a client-final built without the password authenticated"
            );
        }
    }
});
