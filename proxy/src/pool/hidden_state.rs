//! The proxy's half of the guard against temporary objects created out of its sight (inside a
//! function, a procedure, a `DO` block or dynamic SQL; the database's half, an event trigger that
//! `maschera policy apply` installs, is `policy::pool_guard`): every pooled upstream connection is
//! opened with the startup setting `maschera.pooled = on`, and the trigger's INFO notice pins the
//! session that created the object (it is not passed on to the client).
//! Not for: what the statement text shows (`pinning`), or state no event tells of (settings set
//! inside functions, `LISTEN`, advisory locks, cursors: README "Pooling").

use crate::wire::frame;
use policy::pool_guard::{PIN_SQLSTATE, POOLED_SETTING};

/// Why a session the trigger told of is pinned.
pub const REASON: &str = "temporary object created by server-side code";

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

    #[test]
    fn only_the_triggers_sqlstate_pins() {
        let notice = |code: &str| format!("SINFO\0C{code}\0Mmaschera: ...\0\0").into_bytes();
        assert!(pins(&notice("01MP1")));
        assert!(!pins(&notice("00000")));
        assert!(!pins(b"\0"));
    }
}
