//! Session state created out of the statement text's sight (inside a function, a procedure, a
//! trigger or dynamic SQL) that PostgreSQL tells of, so that the session pins:
//! - temporary objects: every pooled upstream connection is opened with the startup setting
//!   `maschera.pooled = on`, and the event trigger `maschera policy apply` installs (the database's
//!   half, `policy::pool_guard`) sends an INFO notice that pins the session that created one (the
//!   notice is not passed on to the client);
//! - the settings PostgreSQL reports (`GUC_REPORT`: `TimeZone`, `DateStyle`, `IntervalStyle`,
//!   `application_name`, `client_encoding`, `standard_conforming_strings`,
//!   `default_transaction_read_only`, ...): a ParameterStatus during a transaction whose value
//!   differs, when the transaction ends, from what the pool's connections start with pins the
//!   session, unless a `SET` the proxy follows made it (that connection is closed anyway, see
//!   `settings`); `SET LOCAL` reverts before the end and pins nothing.
//!
//! Not for: what the statement text shows (`pinning`), or state nothing tells of (other settings
//! set inside functions, `LISTEN`, advisory locks, cursors: README "Pooling").

use crate::wire::frame;
use policy::pool_guard::{PIN_SQLSTATE, POOLED_SETTING};

/// Why a session the trigger told of is pinned.
pub const REASON: &str = "temporary object created by server-side code";

/// Why a session whose reported setting changed out of sight is pinned.
pub const SETTING_REASON: &str = "setting changed by server-side code";

/// The settings PostgreSQL reported during a transaction (ParameterStatus), each with its last
/// value.
#[derive(Debug, Default)]
pub struct Reported {
    changed: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Reported {
    /// A ParameterStatus (`body` without type and length).
    pub fn observe(&mut self, body: &[u8]) {
        let Some((name, value)) = parameter(body) else {
            return;
        };
        match self.changed.iter_mut().find(|(n, _)| n == name) {
            Some((_, last)) => value.clone_into(last),
            None => self.changed.push((name.to_vec(), value.to_vec())),
        }
    }

    /// Whether any setting was reported since the last [`Reported::end`].
    pub fn any(&self) -> bool {
        !self.changed.is_empty()
    }

    /// At a transaction's end: whether a reported setting now differs from its value in
    /// `greeting` (the ParameterStatus frames a connection of the pool sent at login); forgets
    /// them.
    pub fn end(&mut self, greeting: &[u8]) -> bool {
        let differs = self
            .changed
            .iter()
            .any(|(name, value)| started_with(greeting, name) != Some(value.as_slice()));
        self.changed.clear();
        differs
    }
}

/// A ParameterStatus body's name and value.
fn parameter(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = frame::cstr(body)?;
    let (value, _) = frame::cstr(rest)?;
    Some((name, value))
}

/// The value of setting `name` among the ParameterStatus frames of `greeting`.
fn started_with<'g>(greeting: &'g [u8], name: &[u8]) -> Option<&'g [u8]> {
    let mut rest = greeting;
    while let Ok(Some(header)) = frame::peek_header(rest, rest.len()) {
        let whole = rest.get(..header.len)?;
        if header.tag == b'S'
            && let Some((n, value)) = parameter(frame::body(whole))
            && n == name
        {
            return Some(value);
        }
        rest = &rest[header.len..];
    }
    None
}

/// `params` for a pooled connection's startup: without any `maschera.pooled` of the client's, with
/// `maschera.pooled = on` last.
pub fn startup_params(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(POOLED_SETTING))
        .cloned()
        .chain([(POOLED_SETTING.to_owned(), "on".to_owned())])
        .collect()
}

/// Whether a NoticeResponse (`body` without type and length) is the trigger's.
pub fn pins(body: &[u8]) -> bool {
    frame::sqlstate(body) == Some(PIN_SQLSTATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_the_proxys_and_comes_last() {
        let params = startup_params(&[
            ("Maschera.Pooled".into(), "off".into()),
            ("application_name".into(), "app".into()),
        ]);
        assert_eq!(
            params,
            [
                ("application_name".to_owned(), "app".to_owned()),
                ("maschera.pooled".to_owned(), "on".to_owned())
            ]
        );
    }

    fn status(name: &str, value: &str) -> Vec<u8> {
        let body = format!("{name}\0{value}\0");
        let mut frame = vec![b'S'];
        frame.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        frame.extend_from_slice(body.as_bytes());
        frame
    }

    #[test]
    fn a_reported_setting_counts_when_it_ends_the_transaction_changed() {
        let greeting = [status("DateStyle", "ISO, MDY"), status("TimeZone", "UTC")].concat();
        let mut reported = Reported::default();
        assert!(!reported.end(&greeting), "nothing reported");
        // SET LOCAL: reported, then reverted before the end.
        reported.observe(&status("TimeZone", "Asia/Kathmandu")[5..]);
        reported.observe(&status("TimeZone", "UTC")[5..]);
        assert!(!reported.end(&greeting));
        reported.observe(&status("TimeZone", "Asia/Kathmandu")[5..]);
        assert!(reported.end(&greeting));
        assert!(!reported.end(&greeting), "forgotten at the end");
        reported.observe(&status("in_hot_standby", "off")[5..]);
        assert!(reported.end(&greeting), "not in the greeting");
        reported.observe(b"no terminator");
        assert!(!reported.end(&greeting));
    }

    #[test]
    fn only_the_triggers_sqlstate_pins() {
        let notice = |code: &str| format!("SINFO\0C{code}\0Mmaschera: ...\0\0").into_bytes();
        assert!(pins(&notice("01MP1")));
        assert!(!pins(&notice("00000")));
        assert!(!pins(b"\0"));
    }
}
