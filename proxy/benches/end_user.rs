//! What end users cost the proxy (issue 22): verifying a token the cache does not hold, per
//! algorithm (EdDSA, ES256, RS256, HS256), and the proxy's CPU for one switch of end user with a
//! token it verified before (recognising `SET maschera.end_user = '...'`, the cache lookup by digest,
//! the application's bounds, the transaction state and the substitute sent upstream).
//! Not for: the round trip to PostgreSQL (the substitute is one tiny `SET LOCAL`) or pass/fail checks.
//!
//! Prints µs per operation, the median of several rounds. Run: `cargo bench -p maschera --bench end_user`.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed run")]
#![allow(unsafe_code, reason = "libc calls, std::env::set_var")]

use jsonwebtoken::{Algorithm, EncodingKey};
use maschera::config::end_users::{EndUserConfig, KeyAlgorithm, KeyConfig};
use maschera::end_user::route;
use maschera::end_user::sign::{TokenRequest, sign_with};
use maschera::end_user::state::{EndUserState, Scope};
use maschera::end_user::token::TokenVerifier;
use maschera::net::scram::Verifier;
use maschera::session::ServerEvent;
use maschera::users::application::{Application, AttributeBounds};
use maschera::users::{User, UserStore};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const ROUNDS: usize = 5;
const SECRET_ENV: &str = "MASCHERA_BENCH_END_USER_SECRET";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// A key pair of `algorithm` in `dir`: its configuration and its private key.
fn key(dir: &Path, algorithm: KeyAlgorithm) -> Option<(KeyConfig, EncodingKey)> {
    let kid = format!("{algorithm:?}");
    let public = dir.join(format!("{kid}.pub.pem"));
    let (private, encoding) = match algorithm {
        KeyAlgorithm::HS256 => {
            let secret = "a benchmark secret of at least thirty-two bytes";
            // SAFETY: set before any thread reads the environment.
            unsafe { std::env::set_var(SECRET_ENV, secret) };
            let config = KeyConfig {
                kid,
                algorithm,
                public_key: None,
                secret_env: Some(SECRET_ENV.into()),
                private_key: None,
            };
            return Some((config, EncodingKey::from_secret(secret.as_bytes()).ok()?));
        }
        KeyAlgorithm::RS256 => {
            let private = dir.join("rsa.pem");
            let made = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&private)
                .status()
                .ok()?
                .success()
                && std::process::Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&private)
                    .arg("-out")
                    .arg(&public)
                    .status()
                    .ok()?
                    .success();
            if !made {
                return None;
            }
            let pem = std::fs::read(&private).ok()?;
            (private, EncodingKey::from_rsa_pem(&pem).ok()?)
        }
        _ => {
            let alg = if algorithm == KeyAlgorithm::EdDSA {
                &rcgen::PKCS_ED25519
            } else {
                &rcgen::PKCS_ECDSA_P256_SHA256
            };
            let pair = rcgen::KeyPair::generate_for(alg).ok()?;
            std::fs::write(&public, pair.public_key_pem()).ok()?;
            let pem = pair.serialize_pem();
            let encoding = if algorithm == KeyAlgorithm::EdDSA {
                EncodingKey::from_ed_pem(pem.as_bytes())
            } else {
                EncodingKey::from_ec_pem(pem.as_bytes())
            };
            (dir.join("unused"), encoding.ok()?)
        }
    };
    let _ = private;
    Some((
        KeyConfig {
            kid,
            algorithm,
            public_key: Some(public),
            secret_env: None,
            private_key: None,
        },
        encoding,
    ))
}

fn config(keys: Vec<KeyConfig>) -> EndUserConfig {
    EndUserConfig {
        keys,
        issuer: Some("crm".into()),
        audience: Some("maschera".into()),
        max_lifetime_seconds: 3600,
        leeway_seconds: 30,
        max_token_bytes: 8192,
        max_failures: 20,
        failure_window_seconds: 60,
    }
}

fn request(n: usize, now: u64) -> TokenRequest {
    let sam = User {
        name: "sam".into(),
        role: "sales".into(),
        attributes: BTreeMap::from([("region".into(), "north".into())]),
        verifier: Verifier::from_password("x", 1),
    };
    TokenRequest {
        jti: Some(format!("request-{n}")),
        ..TokenRequest::for_user(&sam, &config(Vec::new()), now, 600)
    }
}

fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::HS256 => Algorithm::HS256,
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!("end-user tokens: µs per operation, median of {ROUNDS} rounds");
    let mut switch_key = None;
    for algorithm in [
        KeyAlgorithm::EdDSA,
        KeyAlgorithm::ES256,
        KeyAlgorithm::RS256,
        KeyAlgorithm::HS256,
    ] {
        let Some((key_config, encoding)) = key(dir.path(), algorithm) else {
            println!("  verify {algorithm:?}: skipped (no key)");
            continue;
        };
        let kid = key_config.kid.clone();
        let verifier = TokenVerifier::new(&config(vec![key_config.clone()])).expect("verifier");
        let per_round = if algorithm == KeyAlgorithm::RS256 {
            300
        } else {
            1000
        };
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            let tokens: Vec<String> = (0..per_round)
                .map(|n| {
                    let request = request(round * per_round + n, now);
                    sign_with(&request, jwt_algorithm(algorithm), Some(&kid), &encoding)
                        .expect("sign")
                })
                .collect();
            let start = Instant::now();
            for token in &tokens {
                verifier.verify(token).expect("verifies");
            }
            rounds.push(start.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        }
        println!("  verify {algorithm:?} (not cached): {:.1}", median(rounds));
        if algorithm == KeyAlgorithm::EdDSA {
            switch_key = Some((key_config, encoding));
        }
    }

    // One switch with a cached token, as the application session's hook makes it.
    let (key_config, encoding) = switch_key.expect("an Ed25519 key");
    let verifier = TokenVerifier::new(&config(vec![key_config.clone()])).expect("verifier");
    let users = UserStore::default();
    let application = Application {
        roles: vec!["sales".into(), "support".into()],
        attributes: AttributeBounds::Values(BTreeMap::from([(
            "region".into(),
            vec!["north".into(), "south".into()],
        )])),
        keys: Vec::new(),
    };
    let queries: Vec<String> = (0..2)
        .map(|n| {
            let token = sign_with(
                &request(n, now),
                Algorithm::EdDSA,
                Some(&key_config.kid),
                &encoding,
            )
            .expect("sign");
            format!("SET maschera.end_user = '{token}'")
        })
        .collect();
    let mut state = EndUserState::default();
    let switches = 100_000;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for n in 0..switches {
            let text = &queries[n % 2];
            assert!(route::mentions(text.as_bytes()));
            let Some(route::Route::Set { token, .. }) = route::query_route(text) else {
                panic!("a route");
            };
            let verified = verifier.verify(&token).expect("cached");
            let end_user = Arc::new(application.admit(&verified, &users).expect("within bounds"));
            let substitute = route::substitute_query(
                &route::Route::Set {
                    local: true,
                    token: String::new(),
                },
                &end_user.token_id,
            );
            state
                .switch(Some(end_user), Scope::Session, true)
                .expect("switch");
            state.on_server_event(ServerEvent::Ready { status: b'I' }, n as u64 + 1);
            std::hint::black_box(substitute);
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / switches as f64);
    }
    println!(
        "  switch of end user, cached token ({} bytes): {:.2}",
        queries[0].len(),
        median(rounds)
    );
}
