//! Whether each restricted role's login is still as `policy apply` left it. PostgreSQL lets any role
//! `ALTER ROLE` itself: a role's login used straight may change its own password (the proxy can then no
//! longer log in as it, and every user of the role is refused) and give itself role-level settings
//! (`statement_timeout`, `default_transaction_read_only`, ...) that the proxy's sessions of the role
//! would run with (the settings the proxy's reading of statements depends on it pins in each session's
//! startup packet). No grant can forbid either; the repair is `maschera policy apply`, which sets the
//! password from the credentials file again and resets the settings. The proxy runs [`problems`] at
//! start and on each policy reload and logs each one at ERROR; `policy check --upstream` reports the
//! settings ([`unexpected_settings`]).
//! Not for: refusing anything (a session whose upstream login fails is told why by `net::upstream`).

use crate::admin::admin_connect::connect_as;
use crate::admin::credentials::Credentials;
use crate::net::upstream::UpstreamTarget;
use policy::apply_sql::{SUPERUSER_LOGIN_SETTINGS, login_settings};

/// The repair, as the messages name it.
pub const REPAIR: &str = "run `maschera policy apply` to set it again";

/// The role-level settings of role `role`'s login that `policy apply` did not make: `in_database`
/// tells a setting of one database (`ALTER ROLE ... IN DATABASE`, never made by the apply),
/// `config` is `pg_db_role_setting.setconfig` (`name=value` each).
pub fn unexpected_settings(role: &str, in_database: bool, config: &[String]) -> Vec<String> {
    let expected = login_settings(role);
    let plain = |v: &str| v.trim_matches('"').to_ascii_lowercase();
    config
        .iter()
        .filter(|setting| {
            let (name, value) = setting.split_once('=').unwrap_or((setting.as_str(), ""));
            in_database
                || !expected
                    .iter()
                    .map(|(n, v)| (*n, v.as_str()))
                    .chain(SUPERUSER_LOGIN_SETTINGS.iter().copied())
                    .any(|(n, v)| n == name && plain(v) == plain(value))
        })
        .cloned()
        .collect()
}

/// The message for `settings` found on `login`.
pub fn settings_message(login: &str, settings: &[String]) -> String {
    format!(
        "login \"{login}\" has role-level settings that `maschera policy apply` did not make ({}): \
         a role's login may give them to itself straight on PostgreSQL, and the proxy's sessions of \
         the role run with them; {REPAIR}",
        settings.join(", ")
    )
}

/// What [`problems`] found about one login.
pub enum Finding {
    /// The proxy cannot serve the role as `policy apply` meant: a refused password, settings the
    /// apply did not make.
    Error(String),
    /// A protection the apply could not give (it did not run as a superuser).
    Warning(String),
}

/// Logs in once as each restricted role's login (`roles`: policy role names) with the password of
/// the credentials file and reads its settings; one finding per problem.
pub async fn problems<'r>(
    upstream: &UpstreamTarget,
    credentials: &Credentials,
    roles: impl Iterator<Item = &'r str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for role in roles {
        let Some(login) = credentials.login(role) else {
            continue;
        };
        // The login's own role-level settings are what is checked, so they must not stop the
        // check: a `statement_timeout` it gave itself would cancel the read below.
        let options = "-c statement_timeout=0";
        let client = match connect_as(upstream, &login.user, Some(&login.password), options).await {
            Ok((client, _connection)) => client,
            Err(err) => {
                let refused = err
                    .chain()
                    .filter_map(|e| e.downcast_ref::<tokio_postgres::Error>())
                    .any(|e| e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD));
                out.push(Finding::Error(if refused {
                    format!(
                        "PostgreSQL refuses the password of login \"{}\" (policy role {role}) that the \
                         credentials file holds: it may have been changed straight on PostgreSQL \
                         (ALTER ROLE ... PASSWORD), and every user of the role is refused; {REPAIR}",
                        login.user
                    )
                } else {
                    format!(
                        "cannot log in as login \"{}\" (policy role {role}): {err:#}",
                        login.user
                    )
                }));
                continue;
            }
        };
        let rows = client
            .query(
                "SELECT s.setdatabase <> 0, s.setconfig FROM pg_catalog.pg_db_role_setting s \
                 WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)",
                &[],
            )
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(err) => {
                out.push(Finding::Error(format!(
                    "cannot read the settings of login \"{}\" (policy role {role}): {err}",
                    login.user
                )));
                continue;
            }
        };
        let (unexpected, missing) = settings_findings(role, &login.user, &rows);
        out.extend(unexpected.map(Finding::Error));
        out.extend(missing.map(Finding::Warning));
    }
    out
}

/// What the rows `(setdatabase <> 0, setconfig)` of `pg_db_role_setting` for role `role`'s login
/// `login` show: the message for settings the apply did not make (an error), and the one for the
/// superuser-only settings it would make that the login lacks (a warning: an apply by a
/// non-superuser cannot give them).
pub fn settings_findings(
    role: &str,
    login: &str,
    rows: &[tokio_postgres::Row],
) -> (Option<String>, Option<String>) {
    let mut unexpected = Vec::new();
    let mut all = Vec::new();
    for row in rows {
        let config: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
        unexpected.extend(unexpected_settings(role, row.get(0), &config));
        if !row.get::<_, bool>(0) {
            all.extend(config);
        }
    }
    let missing: Vec<String> = SUPERUSER_LOGIN_SETTINGS
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .filter(|wanted| !all.contains(wanted))
        .collect();
    (
        (!unexpected.is_empty()).then(|| settings_message(login, &unexpected)),
        (!missing.is_empty()).then(|| {
            format!(
                "login \"{login}\" lacks {}: `pg_stat_activity` shows it the statements, literals \
                 included, of the other sessions of the login, i.e. of the other users of its role; \
                 only a superuser can set it (`policy apply` as a superuser does, or ALTER ROLE \"{login}\" \
                 SET {} once; later applies keep it)",
                missing.join(", "),
                missing.join(", ").replace('=', " = ")
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_settings_the_apply_makes_are_expected() {
        let applied: Vec<String> = [
            "search_path=maschera_sales",
            "jit=off",
            "standard_conforming_strings=on",
            "client_encoding=utf8",
            "row_security=on",
            "track_activities=off",
        ]
        .map(String::from)
        .into();
        assert!(unexpected_settings("sales", false, &applied).is_empty());
        let mut tampered = applied.clone();
        tampered.push("statement_timeout=1".into());
        tampered[2] = "standard_conforming_strings=off".into();
        assert_eq!(
            unexpected_settings("sales", false, &tampered),
            ["standard_conforming_strings=off", "statement_timeout=1"]
        );
        assert_eq!(
            unexpected_settings("sales", true, &applied[..1]),
            ["search_path=maschera_sales"]
        );
    }
}
