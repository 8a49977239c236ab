//! What may reach the operational log (standard error), whatever `RUST_LOG` says: events of our own
//! crates at the level `RUST_LOG` chooses, events of every dependency (`sqlparser`, `tokio_postgres`,
//! `postgres_protocol`, `rustls`, ... through `tracing` or bridged from the `log` crate) at warning
//! and error only. Dependencies log statement text and literals at debug and trace (sqlparser's
//! "Parsing sql '...'", the driver's statements and parameters, notices at info), and an operator
//! who sets `RUST_LOG=debug` to troubleshoot must not get personal data in the log for it.
//! Not for: choosing levels (see `EnvFilter` in `serve_cmd` and `demo`) or the access log.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterFn, filter_fn};

/// Target prefix of our own crates (`maschera`, `maschera_policy`).
const OWN_TARGET: &str = "maschera";

/// Whether an event or span with this metadata may be logged at all.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with(OWN_TARGET) || *meta.level() <= Level::WARN
}

/// The filter layer to add to every subscriber that writes operational logs.
pub fn layer() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn(allowed as fn(&Metadata<'_>) -> bool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!()
        }
    }
    static SITE: Site = Site;

    fn meta(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&SITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn dependencies_are_capped_at_warn_and_our_crates_are_not() {
        assert!(!allowed(&meta("sqlparser::parser", Level::DEBUG)));
        assert!(!allowed(&meta("tokio_postgres::prepare", Level::TRACE)));
        assert!(!allowed(&meta("tokio_postgres::connection", Level::INFO)));
        assert!(allowed(&meta("rustls::conn", Level::WARN)));
        assert!(allowed(&meta("maschera::session", Level::TRACE)));
        assert!(allowed(&meta("maschera_policy::rewrite", Level::DEBUG)));
    }
}
