//! End-user tokens: JWTs an application signs for the person behind a request, verified here with
//! the keys of `[end_users]` (EdDSA, ES256, RS256 public keys chosen by `kid`; HS256 with a secret
//! from the environment). A verified token gives the end user's name (`sub`), optionally a role and
//! attributes (checked against the application's bounds in `application`), its expiry and an id for
//! the access log (`jti`, else a digest). Verified tokens are cached by their SHA-256 until `exp`.
//!
//! Every failure is a [`TokenError`] whose message names the check that failed and never contains
//! the token or any part of it.
//!
//! Not for: the application's bounds (see `application`), how a token reaches the proxy (see
//! `route`) or signing tokens (see `sign`).

use crate::config::end_users::{EndUserConfig, KeyAlgorithm, KeyConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// An end user's name or an attribute value longer than this is refused.
const MAX_CLAIM_BYTES: usize = 256;
/// A token with more attributes than this is refused.
const MAX_ATTRIBUTES: usize = 32;
/// Verified tokens kept in the cache; when it is full, expired ones are dropped, then all.
const CACHE_ENTRIES: usize = 10_000;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The end user (`sub`).
    pub end_user: String,
    /// The role the token asserts (`role`), if any.
    pub role: Option<String>,
    /// The attributes the token asserts (`attributes`: an object of strings).
    pub attributes: BTreeMap<String, String>,
    /// The `kid` of the key that verified it.
    pub key: String,
    /// `exp` (plus the leeway), seconds since the epoch.
    pub expires: u64,
    /// The token's `jti` if it has one, else `sha256:` and the first 16 hex digits of its digest:
    /// what the access log names it by.
    pub id: String,
}

/// Why a token is refused: each variant names one check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("the end-user token is longer than {0} bytes")]
    Oversized(usize),
    #[error(
        "the end-user token is not a well-formed JWT (header.claims.signature in base64url JSON)"
    )]
    Malformed,
    #[error("the end-user token names no key (kid) and more than one key is configured")]
    NoKeyId,
    #[error("the end-user token's key (kid) is not one of the configured keys")]
    UnknownKey,
    #[error("the end-user token's algorithm is not the one configured for its key")]
    WrongAlgorithm,
    #[error("the end-user token's signature does not verify")]
    BadSignature,
    #[error("the end-user token has expired (exp)")]
    Expired,
    #[error("the end-user token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the end-user token lacks the claim {0:?}")]
    MissingClaim(&'static str),
    #[error("the end-user token lives longer than the {0} seconds allowed (exp)")]
    LifetimeTooLong(u64),
    #[error("the end-user token's issuer (iss) is not the configured one")]
    WrongIssuer,
    #[error("the end-user token's audience (aud) is not the configured one")]
    WrongAudience,
    #[error("the end-user token's claims are not of the expected form ({0})")]
    BadClaims(&'static str),
    #[error("the end-user key {0:?} cannot be used: {1}")]
    Key(String, String),
}

impl TokenError {
    /// SQLSTATE of the refusal: 28000 (invalid authorization specification).
    pub fn sqlstate(&self) -> &'static str {
        "28000"
    }

    /// A short label for metrics and the access log.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Oversized(_) => "oversized",
            TokenError::Malformed => "malformed",
            TokenError::NoKeyId => "no_kid",
            TokenError::UnknownKey => "unknown_key",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::LifetimeTooLong(_) => "lifetime",
            TokenError::WrongIssuer => "issuer",
            TokenError::WrongAudience => "audience",
            TokenError::BadClaims(_) => "claims",
            TokenError::Key(..) => "key",
        }
    }
}

/// The claims read from a token (`iss`, `aud` and `nbf` are checked by the JWT crate).
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    role: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

struct Key {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies end-user tokens with the configured keys; one per proxy, shared by its sessions.
pub struct TokenVerifier {
    keys: HashMap<String, Key>,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: u64,
    leeway: u64,
    max_bytes: usize,
    cache: Mutex<HashMap<[u8; 32], Arc<VerifiedToken>>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// The secret of an HS256 key, from its environment variable.
pub(crate) fn secret(key: &KeyConfig) -> Result<Vec<u8>, TokenError> {
    let name = key.secret_env.as_deref().unwrap_or_default();
    match std::env::var(name) {
        Ok(secret) if secret.len() >= 32 => Ok(secret.into_bytes()),
        Ok(_) => Err(TokenError::Key(
            key.kid.clone(),
            format!("the secret in {name} must have at least 32 bytes"),
        )),
        Err(_) => Err(TokenError::Key(
            key.kid.clone(),
            format!("the environment variable {name} is not set"),
        )),
    }
}

fn decoding_key(key: &KeyConfig) -> Result<DecodingKey, TokenError> {
    let unusable = |message: String| TokenError::Key(key.kid.clone(), message);
    if key.algorithm == KeyAlgorithm::HS256 {
        return DecodingKey::from_secret(&secret(key)?).map_err(|err| unusable(err.to_string()));
    }
    let path = key
        .public_key
        .as_deref()
        .unwrap_or(std::path::Path::new(""));
    let pem = std::fs::read(path).map_err(|err| unusable(format!("{}: {err}", path.display())))?;
    let decoded = match key.algorithm {
        KeyAlgorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        KeyAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        KeyAlgorithm::HS256 => unreachable!("handled above"),
    };
    decoded.map_err(|err| unusable(format!("{}: {err}", path.display())))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenVerifier {
    /// Loads the keys of `config` (files read, secrets taken from the environment).
    pub fn new(config: &EndUserConfig) -> Result<TokenVerifier, TokenError> {
        let mut keys = HashMap::new();
        for key in &config.keys {
            let algorithm = jwt_algorithm(key.algorithm);
            keys.insert(
                key.kid.clone(),
                Key {
                    kid: key.kid.clone(),
                    algorithm,
                    key: decoding_key(key)?,
                },
            );
        }
        Ok(TokenVerifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_lifetime: config.max_lifetime_seconds,
            leeway: config.leeway_seconds,
            max_bytes: config.max_token_bytes,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies `token` now: from the cache when it was verified before and has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.verify_at(token, now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<VerifiedToken>, TokenError> {
        if token.len() > self.max_bytes {
            return Err(TokenError::Oversized(self.max_bytes));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cached(&digest, now) {
            return Ok(hit);
        }
        let verified = Arc::new(self.check(token, &digest, now)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, token| token.expires > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, verified.clone());
        Ok(verified)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Arc<VerifiedToken>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(digest).filter(|t| t.expires > now).cloned()
    }

    /// The full check of a token not in the cache.
    fn check(&self, token: &str, digest: &[u8; 32], now: u64) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid).ok_or(TokenError::UnknownKey)?,
            None if self.keys.len() == 1 => self.keys.values().next().ok_or(TokenError::NoKeyId)?,
            None => return Err(TokenError::NoKeyId),
        };
        if header.alg != key.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // `exp` is checked below against our own clock (the crate reads the system clock).
        validation.validate_exp = false;
        validation.validate_aud = self.audience.is_some();
        let mut required = vec!["sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "iss" => TokenError::MissingClaim("iss"),
                    "aud" => TokenError::MissingClaim("aud"),
                    _ => TokenError::MissingClaim("sub"),
                },
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                ErrorKind::Json(_) => TokenError::BadClaims(
                    "sub, jti and role are strings, exp, nbf and iat numbers, attributes an object of strings",
                ),
                _ => TokenError::Malformed,
            })?
            .claims;
        let expires = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if expires.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        let issued = claims
            .iat
            .unwrap_or(now)
            .min(now.saturating_add(self.leeway));
        if expires.saturating_sub(issued) > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong(self.max_lifetime));
        }
        let end_user = claims.sub.ok_or(TokenError::MissingClaim("sub"))?;
        let texts = std::iter::once(&end_user)
            .chain(claims.role.iter())
            .chain(claims.jti.iter())
            .chain(claims.attributes.values());
        for text in texts {
            if text.is_empty() || text.len() > MAX_CLAIM_BYTES || text.chars().any(char::is_control)
            {
                return Err(TokenError::BadClaims(
                    "sub, role, jti and attribute values have 1 to 256 bytes and no control characters",
                ));
            }
        }
        if claims.attributes.len() > MAX_ATTRIBUTES {
            return Err(TokenError::BadClaims("at most 32 attributes"));
        }
        let id = match claims.jti {
            Some(jti) => jti,
            None => format!("sha256:{}", hex::encode(&digest[..8])),
        };
        Ok(VerifiedToken {
            end_user,
            role: claims.role,
            attributes: claims.attributes,
            key: key.kid.clone(),
            expires: expires.saturating_add(self.leeway),
            id,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::end_user::sign::{TokenRequest, sign_with};
    use jsonwebtoken::EncodingKey;

    pub(crate) struct Keys {
        pub _dir: tempfile::TempDir,
        pub config: EndUserConfig,
        pub ed_private: Vec<u8>,
        pub ec_private: Vec<u8>,
    }

    /// An Ed25519 and an ES256 key pair in a temporary folder, configured as kids `ed` and `ec`.
    pub(crate) fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let mut config_keys = Vec::new();
        let mut privates = Vec::new();
        for (kid, alg, algorithm) in [
            ("ed", &rcgen::PKCS_ED25519, KeyAlgorithm::EdDSA),
            ("ec", &rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::ES256),
        ] {
            let pair = rcgen::KeyPair::generate_for(alg).unwrap();
            let public = dir.path().join(format!("{kid}.pub.pem"));
            std::fs::write(&public, pair.public_key_pem()).unwrap();
            privates.push(pair.serialize_pem().into_bytes());
            config_keys.push(KeyConfig {
                kid: kid.into(),
                algorithm,
                public_key: Some(public),
                secret_env: None,
                private_key: None,
            });
        }
        let config = EndUserConfig {
            keys: config_keys,
            issuer: Some("crm".into()),
            audience: Some("maschera".into()),
            max_lifetime_seconds: 3600,
            leeway_seconds: 30,
            max_token_bytes: 4096,
            max_failures: 3,
            failure_window_seconds: 60,
        };
        let ec_private = privates.pop().unwrap();
        let ed_private = privates.pop().unwrap();
        Keys {
            _dir: dir,
            config,
            ed_private,
            ec_private,
        }
    }

    pub(crate) fn sam(now: u64) -> TokenRequest {
        let user = crate::users::User {
            name: "sam".into(),
            role: "sales".into(),
            attributes: BTreeMap::from([("region".into(), "north".into())]),
            verifier: crate::net::scram::Verifier::from_password("x", 1),
        };
        TokenRequest::for_user(&user, &keys().config, now, 600)
    }

    fn ed(keys: &Keys, request: &TokenRequest) -> String {
        let key = EncodingKey::from_ed_pem(&keys.ed_private).unwrap();
        sign_with(request, Algorithm::EdDSA, Some("ed"), &key).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_good_token_verifies_with_either_key_and_is_cached() {
        let keys = keys();
        let verifier = TokenVerifier::new(&keys.config).unwrap();
        let token = ed(&keys, &sam(NOW));
        let verified = verifier.verify_at(&token, NOW).unwrap();
        assert_eq!(verified.end_user, "sam");
        assert_eq!(verified.role.as_deref(), Some("sales"));
        assert_eq!(verified.attributes["region"], "north");
        assert!(verified.id.starts_with("sha256:"), "{}", verified.id);
        assert!(Arc::ptr_eq(
            &verified,
            &verifier.verify_at(&token, NOW + 1).unwrap()
        ));
        let ec = EncodingKey::from_ec_pem(&keys.ec_private).unwrap();
        let mut tom = sam(NOW);
        tom.end_user = "tom".into();
        tom.jti = Some("request-7".into());
        let token = sign_with(&tom, Algorithm::ES256, Some("ec"), &ec).unwrap();
        let verified = verifier.verify_at(&token, NOW).unwrap();
        assert_eq!(
            (verified.end_user.as_str(), verified.id.as_str()),
            ("tom", "request-7")
        );
        // The cache does not outlive `exp`.
        let token = ed(&keys, &sam(NOW));
        assert_eq!(
            verifier.verify_at(&token, NOW + 600 + 31),
            Err(TokenError::Expired)
        );
    }

    #[test]
    #[allow(unsafe_code, reason = "std::env::set_var")]
    fn hs256_with_a_secret_from_the_environment() {
        let mut keys = keys();
        let name = "MASCHERA_TEST_END_USER_SECRET_TOKEN_RS";
        let secret = "a shared secret of at least thirty-two bytes";
        // SAFETY: set once by this test only, under a name no other test reads.
        unsafe { std::env::set_var(name, secret) };
        keys.config.keys = vec![KeyConfig {
            kid: "hs".into(),
            algorithm: KeyAlgorithm::HS256,
            public_key: None,
            secret_env: Some(name.into()),
            private_key: None,
        }];
        let verifier = TokenVerifier::new(&keys.config).unwrap();
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        let token = sign_with(&sam(NOW), Algorithm::HS256, None, &key).unwrap();
        assert_eq!(verifier.verify_at(&token, NOW).unwrap().end_user, "sam");
        let wrong =
            EncodingKey::from_secret(b"another secret of at least thirty-two bytes").unwrap();
        let token = sign_with(&sam(NOW), Algorithm::HS256, None, &wrong).unwrap();
        assert_eq!(
            verifier.verify_at(&token, NOW),
            Err(TokenError::BadSignature)
        );
    }

    /// Every bad token gets its own reason, and no reason contains any part of the token.
    #[test]
    fn each_bad_token_is_refused_with_its_own_reason() {
        let keys = keys();
        let verifier = TokenVerifier::new(&keys.config).unwrap();
        let good = ed(&keys, &sam(NOW));
        let with = |change: &dyn Fn(&mut TokenRequest)| {
            let mut request = sam(NOW);
            change(&mut request);
            ed(&keys, &request)
        };
        let mut tampered = good.clone().into_bytes();
        let at = good.find('.').unwrap() + 5;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let mut bad_signature = good.clone();
        bad_signature.truncate(good.rfind('.').unwrap() + 1);
        bad_signature.push_str(&"A".repeat(86));
        let ec = EncodingKey::from_ec_pem(&keys.ec_private).unwrap();
        let cases: Vec<(&str, String, TokenError)> = vec![
            (
                "expired",
                with(&|r| r.expires = NOW - 60),
                TokenError::Expired,
            ),
            (
                "not yet valid",
                with(&|r| r.not_before = Some(NOW + 120)),
                TokenError::NotYetValid,
            ),
            ("tampered claims", tampered, TokenError::BadSignature),
            ("other signature", bad_signature, TokenError::BadSignature),
            (
                "unknown kid",
                sign_with(&sam(NOW), Algorithm::ES256, Some("old"), &ec).unwrap(),
                TokenError::UnknownKey,
            ),
            (
                "no kid",
                sign_with(&sam(NOW), Algorithm::ES256, None, &ec).unwrap(),
                TokenError::NoKeyId,
            ),
            (
                "signed by the other key",
                sign_with(&sam(NOW), Algorithm::ES256, Some("ed"), &ec).unwrap(),
                TokenError::WrongAlgorithm,
            ),
            (
                "too long a life",
                with(&|r| r.expires = NOW + 7200),
                TokenError::LifetimeTooLong(3600),
            ),
            (
                "wrong issuer",
                with(&|r| r.issuer = Some("other".into())),
                TokenError::WrongIssuer,
            ),
            (
                "no audience",
                with(&|r| r.audience = None),
                TokenError::MissingClaim("aud"),
            ),
            (
                "wrong audience",
                with(&|r| r.audience = Some("other".into())),
                TokenError::WrongAudience,
            ),
            ("malformed", "not.a-token".into(), TokenError::Malformed),
            ("empty", String::new(), TokenError::Malformed),
            ("oversized", "x".repeat(5000), TokenError::Oversized(4096)),
            (
                "control character in sub",
                with(&|r| r.end_user = "sam\nroot".into()),
                TokenError::BadClaims(
                    "sub, role, jti and attribute values have 1 to 256 bytes and no control characters",
                ),
            ),
        ];
        for (case, token, expected) in cases {
            let got = verifier.verify_at(&token, NOW).unwrap_err();
            assert_eq!(got, expected, "{case}");
            let message = got.to_string();
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!message.contains(part), "{case}: {message}");
            }
        }
        assert!(
            verifier.verify_at(&good, NOW).is_ok(),
            "the good token still verifies"
        );
    }
}
