//! The proxy's own connections to PostgreSQL as a tokio-postgres client, the one way they are made: the
//! catalog reads and view rebuilds of `serve`, the scheduled retention and admission checks (from
//! `[upstream]`), and `policy apply/check/explain`, `dump`, `subject forget/export`, `retention`, `crm`,
//! `discover` and the access log's PostgreSQL sink (from a libpq-style URL or `key=value` string). The
//! transport is the sessions' (`upstream`: a Unix-domain socket, or TCP with TLS by rustls), so a URL's
//! `sslmode` (`disable`, `allow`, `prefer` (the default, as in libpq), `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM file, or `system`) mean what they mean to libpq; `require`
//! with `sslrootcert` checks the chain, as libpq's does.
//! Not for: relaying client sessions (see `upstream` and `session`).

use crate::net::upstream::UpstreamTarget;
use crate::net::upstream_settings::{UpstreamConfig, UpstreamTlsMode};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use tokio_postgres::Client;
use tokio_postgres::config::{Host, SslMode};

/// Connects to the database `url` names (its `sslmode` and `sslrootcert` honoured) and drives the
/// connection in the background.
pub async fn connect(url: &str) -> Result<Client> {
    let (target, pg) = parse(url)?;
    let (client, _) = login(&target, pg, &tls_words(url)).await?;
    Ok(client)
}

/// A connection as the proxy's own `[upstream]` login over the same transport as the sessions, and
/// the task driving it.
pub async fn connect_target(
    upstream: &UpstreamTarget,
) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    let own = upstream.config().login()?;
    connect_as(upstream, &own.user, own.password.as_deref(), "").await
}

/// [`connect_target`] as another login (a restricted role's, to check that it still logs in), with
/// startup `options` (`-c name=value ...`, empty for none).
pub async fn connect_as(
    upstream: &UpstreamTarget,
    user: &str,
    password: Option<&str>,
    options: &str,
) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    let mut pg = tokio_postgres::Config::new();
    pg.dbname(&upstream.config().database)
        .user(user)
        .application_name("maschera");
    if !options.is_empty() {
        pg.options(options);
    }
    if let Some(password) = password {
        pg.password(password);
    }
    login(upstream, pg, "").await
}

/// Logs in with `pg` (user, password, database, settings) over the target's transport (`how`: what
/// the error context adds about it).
async fn login(
    target: &UpstreamTarget,
    mut pg: tokio_postgres::Config,
    how: &str,
) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    let config = target.config();
    // The transport below is already encrypted as configured.
    pg.ssl_mode(SslMode::Disable);
    let connect = async {
        let stream = target.open_transport().await?;
        anyhow::Ok(pg.connect_raw(stream, tokio_postgres::NoTls).await?)
    };
    let user = pg.get_user().unwrap_or_default().to_owned();
    let (client, connection) = tokio::time::timeout(config.connect_timeout(), connect)
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer in time"))
        .and_then(|connected| connected)
        .with_context(|| {
            format!(
                "connecting to {}:{} as {user}{how}",
                config.host, config.port
            )
        })?;
    let connection = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "admin connection to PostgreSQL ended");
        }
    });
    Ok((client, connection))
}

/// What the error context says about the TLS settings of `url` (e.g. ` (sslmode=require)`).
fn tls_words(url: &str) -> String {
    match split_tls(url) {
        Ok((_, Some(mode), _)) => format!(" (sslmode={mode})"),
        _ => String::new(),
    }
}

/// The transport and the login of a connection string.
fn parse(url: &str) -> Result<(UpstreamTarget, tokio_postgres::Config)> {
    let (rest, mode, root) = split_tls(url)?;
    let pg: tokio_postgres::Config = rest
        .parse()
        .context("reading the connection URL of --upstream")?;
    let tls = match (mode.as_deref(), root.is_some()) {
        (None | Some("prefer"), _) => UpstreamTlsMode::Prefer,
        (Some("disable" | "allow"), _) => UpstreamTlsMode::Off,
        (Some("require"), false) => UpstreamTlsMode::Require,
        (Some("require" | "verify-ca"), _) => UpstreamTlsMode::VerifyCa,
        (Some("verify-full"), _) => UpstreamTlsMode::VerifyFull,
        (Some(other), _) => bail!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ),
    };
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "/var/run/postgresql".to_owned(),
    };
    let Some(user) = pg.get_user() else {
        bail!("the connection URL names no user");
    };
    let config = UpstreamConfig {
        host,
        port: pg.get_ports().first().copied().unwrap_or(5432),
        database: pg.get_dbname().unwrap_or(user).to_owned(),
        databases: Vec::new(),
        tls,
        ca_file: root.filter(|r| r != "system").map(PathBuf::from),
        user: user.to_owned(),
        password: None,
        password_env: None,
        connect_timeout_seconds: pg.get_connect_timeout().map_or(10, |t| t.as_secs().max(1)),
        plan_cache: false,
    };
    let mut pg = pg;
    if pg.get_dbname().is_none() {
        pg.dbname(&config.database);
    }
    Ok((UpstreamTarget::new(&config)?, pg))
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (a `postgres://` URL or `key=value`
/// words): (the rest, sslmode, sslrootcert).
fn split_tls(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value)?) {
                        kept.push(pair);
                    }
                }
                match kept.is_empty() {
                    true => base.to_owned(),
                    false => format!("{base}?{}", kept.join("&")),
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if !take(key.trim(), value.trim_matches('\'').to_owned()) {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text
                .get(at + 1..at + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                bail!("invalid percent-encoding in the connection URL");
            };
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).context("the connection URL is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_urls_and_words() {
        let (rest, mode, root) = split_tls(
            "postgres://app:p%23w@db:5433/crm?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://app:p%23w@db:5433/crm?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = split_tls("host=db user=app sslmode=require dbname=crm").unwrap();
        assert_eq!(rest, "host=db user=app dbname=crm");
        assert_eq!((mode.as_deref(), root), (Some("require"), None));
        assert_eq!(
            split_tls("postgres://a@h/d").unwrap(),
            ("postgres://a@h/d".to_owned(), None, None)
        );
    }

    #[test]
    fn sslmode_means_what_it_means_to_libpq() {
        let mode = |url: &str| parse(url).map(|(t, _)| t.config().tls);
        assert_eq!(mode("postgres://a@h/d").unwrap(), UpstreamTlsMode::Prefer);
        assert_eq!(
            mode("postgres://a@h/d?sslmode=disable").unwrap(),
            UpstreamTlsMode::Off
        );
        assert_eq!(
            mode("postgres://a@h/d?sslmode=require").unwrap(),
            UpstreamTlsMode::Require
        );
        assert!(mode("postgres://a@h/d?sslmode=sometimes").is_err());
        let (target, pg) = parse("postgres://a:b@h:6000/d?application_name=x").unwrap();
        assert_eq!(
            (target.config().host.as_str(), target.config().port),
            ("h", 6000)
        );
        assert_eq!(pg.get_application_name(), Some("x"));
        assert_eq!(pg.get_password(), Some(&b"b"[..]));
    }
}
