//! What the demo tells its user once the proxy accepts connections: one line of JSON for programs
//! (`--json`), or connection lines, queries worth trying and where the access log is, for a person.
//! Not for: setting anything up.

use super::setup::{DATABASE, DEMO_APPLICATION, DEMO_USERS, Demo};
use anyhow::Result;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// The facts of a running demo (the `--json` line).
#[derive(Debug, Serialize)]
pub struct Facts {
    /// URI of the proxy, without credentials.
    pub proxy: String,
    /// Direct URI of the private PostgreSQL as its superuser (bypasses the proxy).
    pub upstream: String,
    pub audit_log: PathBuf,
    /// The demo's configuration file (`maschera end-user token --config`, `audit search --config`).
    #[serde(rename = "config")]
    config_file: PathBuf,
    pub users: Vec<UserFacts>,
    #[serde(skip)]
    sample_created_at: String,
}

#[derive(Debug, Serialize)]
pub struct UserFacts {
    pub user: String,
    /// `None` for the application user (it has no role of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether it is an application user (acts for end users, see `end_user`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub application: bool,
    pub password: String,
    /// URI through the proxy with the user's credentials.
    pub uri: String,
}

impl Demo {
    pub fn facts(&self) -> Facts {
        let names = DEMO_USERS
            .iter()
            .map(|user| (user.name, Some(user.role)))
            .chain([(DEMO_APPLICATION, None)]);
        let users = names
            .zip(&self.passwords)
            .map(|((name, role), password)| UserFacts {
                user: name.into(),
                role: role.map(str::to_owned),
                application: role.is_none(),
                password: password.clone(),
                uri: format!(
                    "postgres://{}:{}@{}/{DATABASE}",
                    percent_encode(name),
                    percent_encode(password),
                    self.listen
                ),
            })
            .collect();
        Facts {
            proxy: format!("postgres://{}/{DATABASE}", self.listen),
            upstream: self.pg.uri(DATABASE),
            audit_log: self.audit_log(),
            users,
            config_file: self.config_file(),
            sample_created_at: self.sample_created_at.clone(),
        }
    }
}

impl Facts {
    /// Exactly one line of JSON on standard output, flushed.
    pub fn print_json(&self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    pub fn print_for_a_person(&self) {
        println!("{}", self.for_a_person());
    }

    fn for_a_person(&self) -> String {
        let mut text = format!(
            "Maschera demo: the reference CRM behind the proxy at {proxy}\n\
             (TLS is optional: add ?sslmode=require to any URI; the certificate is self-signed).\n\n\
             Connect as each demo user:\n",
            proxy = self.proxy
        );
        for user in &self.users {
            text.push_str(&format!(
                "  {:<5} ({:<9}) psql '{}'\n",
                user.user,
                user.role.as_deref().unwrap_or("application"),
                user.uri
            ));
        }
        let query = format!(
            "SELECT * FROM contacts WHERE created_at = '{}';",
            self.sample_created_at
        );
        text.push_str(&format!(
            "\nThe same contact as each role (run it as each user):\n  {query}\n\
             \x20 sam  (sales, north)  sees it whole, with the birth date cut to the year and the tax code masked;\n\
             \x20 sara (sales, south)  does not see it at all (row filter on her region);\n\
             \x20 mia  (marketing)     sees it (it has an active marketing consent) without phone, tax code or address;\n\
             \x20 tom  (support)       sees the last name as an initial, a masked e-mail and phone, no birth date;\n\
             \x20 ana  (analyst)       sees a pseudonym for the id and no name or contact details.\n\
             Also try, as tom: SELECT * FROM deals;  (refused: support may not see deals)\n\
             \x20         as tom: SELECT notes FROM interactions LIMIT 20;  (e-mails and phones in the text read [email], [phone])\n\
             \x20         as ana: SELECT id, contact_id FROM deals LIMIT 5;  (the deal's id is a pseudonym of its own)\n\
             and as dora, the DPO, any table, including health_records.\n\n\
             The superuser, straight to PostgreSQL (bypasses Maschera): psql '{upstream}'\n\
             The proxy's configuration: {config}\n\
             The access log (one JSON line per access to personal data or refusal): {audit}\n\
             \x20 search it: maschera audit search --config {config} --user sam\n\
             \x20 as the application user crm, for an end user: maschera end-user token --config {config} --end-user sam\n\
             \x20   prints a token; as crm: SET maschera.end_user = '<token>'; then: SELECT email FROM contacts;\n\
             \x20 check it:  maschera audit verify --config {config}  (exit 2 while it runs: the newest records wait for the next checkpoint)\n\n\
             Stop with Ctrl-C: PostgreSQL stops and the temporary folder is removed.",
            upstream = self.upstream,
            config = self.config_file.display(),
            audit = self.audit_log.display(),
        ));
        text
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986, for the user-info of a URI.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn percent_encoding_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
        assert_eq!(percent_encode("è"), "%C3%A8");
    }
}
