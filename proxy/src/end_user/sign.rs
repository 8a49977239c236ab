//! Signing end-user tokens: what `maschera end-user token` prints (for the demo, scripts, tests and
//! a DBA's own checks), with the first key of `[end_users]` that the proxy's configuration gives a
//! private key (`private_key`) or a secret (`secret_env`) for.
//! Not for: verifying tokens (see `token`); applications sign their own tokens (see
//! `integrations/`).

use super::token::{jwt_algorithm, secret};
use crate::config::end_users::{EndUserConfig, KeyAlgorithm};
use crate::users::{User, UserStore};
use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The claims of a token to sign.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRequest {
    #[serde(rename = "sub")]
    pub end_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "iss", skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(rename = "aud", skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(rename = "iat")]
    pub issued: u64,
    #[serde(rename = "exp")]
    pub expires: u64,
    #[serde(rename = "nbf", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl TokenRequest {
    /// The claims for `user` (its role and attributes) with the issuer and audience `config`
    /// requires, issued at `issued` for `ttl` seconds, without `nbf` and `jti`.
    pub fn for_user(user: &User, config: &EndUserConfig, issued: u64, ttl: u64) -> TokenRequest {
        TokenRequest {
            end_user: user.name.clone(),
            role: Some(user.role.clone()),
            attributes: user.attributes.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            issued,
            expires: issued + ttl,
            not_before: None,
            jti: None,
        }
    }
}

/// Signs `request` with `key` (of `algorithm`), naming `kid` in the header.
pub fn sign_with(
    request: &TokenRequest,
    algorithm: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<String> {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, request, key)
}

/// Signs `request` with `key`: a PKCS#8 PEM private key, or the secret itself for HS256.
pub fn sign_pem(
    request: &TokenRequest,
    algorithm: KeyAlgorithm,
    kid: Option<&str>,
    key: &[u8],
) -> anyhow::Result<String> {
    let encoding = match algorithm {
        KeyAlgorithm::HS256 => EncodingKey::from_secret(key),
        KeyAlgorithm::EdDSA => EncodingKey::from_ed_pem(key),
        KeyAlgorithm::ES256 => EncodingKey::from_ec_pem(key),
        KeyAlgorithm::RS256 => EncodingKey::from_rsa_pem(key),
    }
    .context("the signing key")?;
    Ok(sign_with(
        request,
        jwt_algorithm(algorithm),
        kid,
        &encoding,
    )?)
}

/// A token for `end_user` of `users` (its role and attributes from the users file), living `ttl`
/// seconds, signed with the first configured key the configuration can sign with.
pub fn token_for_user(
    config: &EndUserConfig,
    users: &UserStore,
    end_user: &str,
    ttl: u64,
) -> anyhow::Result<String> {
    let user = users
        .get(end_user)
        .with_context(|| format!("{end_user:?} is not a user of the users file"))?;
    if users.application(end_user).is_some() {
        bail!("{end_user:?} is an application user, not an end user");
    }
    if ttl == 0 || ttl > config.max_lifetime_seconds {
        bail!(
            "--ttl must be 1 to {} seconds ([end_users] max_lifetime_seconds)",
            config.max_lifetime_seconds
        );
    }
    let issued = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let request = TokenRequest::for_user(user, config, issued, ttl);
    for key in &config.keys {
        let pem = match (key.algorithm, &key.private_key) {
            (KeyAlgorithm::HS256, _) => secret(key)?,
            (_, None) => continue,
            (_, Some(path)) => std::fs::read(path)
                .with_context(|| format!("reading the private key {}", path.display()))?,
        };
        return sign_pem(&request, key.algorithm, Some(&key.kid), &pem);
    }
    bail!("no key of [end_users] has a private_key or secret_env to sign with")
}
