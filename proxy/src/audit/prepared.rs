//! Statement records built from parts rendered to JSON once: who a session is ([`Who`], once per
//! session) and what a statement touches ([`What`], once per statement description), shared by `Arc`.
//! A [`PreparedEvent`] is those two pointers plus the few fields of its own (rows, outcome, duration),
//! so queuing a statement's records copies no strings and the writer serializes only those fields.
//! The line it gives is the one the plain [`Event`] with the same fields gives, byte for byte (same
//! members, same order), so every reader reads it the same way.
//! Not for: events that happen once (logins, reloads: plain [`Event`]s) or sealing (see `writer`).

use crate::audit::Completion;
use crate::audit::record::{Event, EventKind, Outcome, TableTouched};
use std::sync::Arc;

/// The end of an event rendered with outcome `ok` and no later field, cut off to keep its members.
const OUTCOME_OK_END: &str = r#","outcome":{"result":"ok"}}"#;

/// Who did it: the members `session`, `client`, `user`, `role`, `database`, `application_name`,
/// `end_user`, `end_user_token` of
/// every record of one session (or a subset of them, e.g. session and user for `outcome` records).
#[derive(Debug)]
pub struct Who {
    /// An event holding these members only.
    fields: Event,
    /// Their JSON, each member preceded by a comma.
    json: Box<str>,
}

impl Who {
    /// The identity members of `event` (its other fields are ignored).
    pub fn new(event: &Event) -> Arc<Who> {
        let mut fields = Event::new(EventKind::Statement);
        Who::copy(event, &mut fields);
        let json = members(&fields);
        Arc::new(Who { fields, json })
    }

    /// Copies the identity members of `from` into `to`.
    fn copy(from: &Event, to: &mut Event) {
        to.session = from.session.clone();
        to.client = from.client.clone();
        to.user = from.user.clone();
        to.role = from.role.clone();
        to.database = from.database.clone();
        to.application_name = from.application_name.clone();
        to.end_user = from.end_user.clone();
        to.end_user_token = from.end_user_token.clone();
    }
}

/// What a statement touches: the members `statement_kind`, `statement` and `tables`.
#[derive(Debug)]
pub struct What {
    /// An event holding these members only.
    fields: Event,
    /// Their JSON, each member preceded by a comma.
    json: Box<str>,
}

impl What {
    /// `kind` e.g. `select` (`None` for a refused statement), `statement` normalized.
    pub fn new(
        kind: Option<String>,
        statement: Option<String>,
        tables: Vec<TableTouched>,
    ) -> Arc<What> {
        let mut fields = Event::new(EventKind::Statement);
        fields.statement_kind = kind;
        fields.statement = statement;
        fields.tables = tables;
        let json = members(&fields);
        Arc::new(What { fields, json })
    }
}

/// The members of `fields` between `event` and `outcome` (`fields` has outcome `ok` and nothing
/// after it), as serde writes them for an [`Event`].
fn members(fields: &Event) -> Box<str> {
    debug_assert!(fields.outcome == Outcome::Ok && fields.rows.is_none());
    // Events hold only strings, numbers and lists, and serde writes their members in field order.
    let json = serde_json::to_string(fields).unwrap_or_default();
    members_of(&json, fields.kind)
}

/// The members of an event's `json` but `event` and `outcome`, each preceded by a comma.
fn members_of(json: &str, kind: EventKind) -> Box<str> {
    let start = format!(r#"{{"event":"{}""#, kind.as_str());
    if let Some(members) = json
        .strip_prefix(start.as_str())
        .and_then(|rest| rest.strip_suffix(OUTCOME_OK_END))
    {
        return members.into();
    }
    // Only if `Event` stopped writing `outcome` last (the tests here would say so): every member
    // still, in another order, which readers do not depend on.
    let mut members = String::new();
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_str(json) {
        for (name, value) in object {
            if name != "event" && name != "outcome" {
                members.push(',');
                members.push_str(&serde_json::Value::String(name).to_string());
                members.push(':');
                members.push_str(&value.to_string());
            }
        }
    }
    members.into()
}

/// An event made of shared parts and its own small fields; what [`Event`] says, cheaper to queue
/// and to serialize.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub kind: EventKind,
    pub who: Arc<Who>,
    pub what: Option<Arc<What>>,
    pub rows: Option<u64>,
    pub outcome: Outcome,
    pub duration_us: Option<u64>,
    /// Set by the writer for a follow-up.
    pub statement_seq: Option<u64>,
    pub detail: Option<String>,
}

impl PreparedEvent {
    /// An event of `kind` by `who` with outcome `ok` and nothing else filled in.
    pub fn new(kind: EventKind, who: &Arc<Who>) -> PreparedEvent {
        PreparedEvent {
            kind,
            who: who.clone(),
            what: None,
            rows: None,
            outcome: Outcome::Ok,
            duration_us: None,
            statement_seq: None,
            detail: None,
        }
    }

    /// Writes how the statement ended into the event, as [`Completion::apply`] does into an [`Event`].
    pub fn complete(&mut self, completion: Completion) {
        completion.fill(
            &mut self.outcome,
            &mut self.rows,
            &mut self.duration_us,
            &mut self.detail,
        );
    }

    /// The same event as a plain [`Event`] (copies every part).
    pub fn to_event(&self) -> Event {
        let mut event = Event::new(self.kind);
        Who::copy(&self.who.fields, &mut event);
        if let Some(what) = &self.what {
            event.statement_kind = what.fields.statement_kind.clone();
            event.statement = what.fields.statement.clone();
            event.tables = what.fields.tables.clone();
        }
        event.rows = self.rows;
        event.outcome = self.outcome.clone();
        event.duration_us = self.duration_us;
        event.statement_seq = self.statement_seq;
        event.detail = self.detail.clone();
        event
    }

    /// Appends the event's members (`"event":...` up to `detail`, in [`Event`]'s order, without
    /// braces) to `out`, as serde writes them for [`PreparedEvent::to_event`].
    pub(crate) fn write_members(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#""event":""#);
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'"');
        out.extend_from_slice(self.who.json.as_bytes());
        if let Some(what) = &self.what {
            out.extend_from_slice(what.json.as_bytes());
        }
        // Writing into a Vec cannot fail, nor can serializing strings and plain enums.
        if let Some(rows) = self.rows {
            member(out, br#","rows":"#, rows);
        }
        out.extend_from_slice(br#","outcome":"#);
        match self.outcome {
            Outcome::Ok => out.extend_from_slice(br#"{"result":"ok"}"#),
            Outcome::Unknown => out.extend_from_slice(br#"{"result":"unknown"}"#),
            _ => {
                let _ = serde_json::to_writer(&mut *out, &self.outcome);
            }
        }
        if let Some(duration) = self.duration_us {
            member(out, br#","duration_us":"#, duration);
        }
        if let Some(seq) = self.statement_seq {
            member(out, br#","statement_seq":"#, seq);
        }
        if let Some(detail) = &self.detail {
            out.extend_from_slice(br#","detail":"#);
            let _ = serde_json::to_writer(&mut *out, detail);
        }
    }
}

/// Appends `name` (`,"name":`) and `number`.
pub(crate) fn member(out: &mut Vec<u8>, name: &[u8], number: u64) {
    out.extend_from_slice(name);
    // serde_json writes integers without the formatting machinery; into a Vec it cannot fail.
    let _ = serde_json::to_writer(out, &number);
}

/// What the log is given to record: a plain event, or one made of prepared parts.
#[derive(Debug)]
pub enum Entry {
    Plain(Box<Event>),
    Prepared(PreparedEvent),
}

impl Entry {
    pub fn kind(&self) -> EventKind {
        match self {
            Entry::Plain(event) => event.kind,
            Entry::Prepared(event) => event.kind,
        }
    }

    /// How the statement ended, written into the record (see [`AuditLog::complete`](crate::audit::AuditLog::complete)).
    pub(crate) fn complete(&mut self, completion: Completion) {
        match self {
            Entry::Plain(event) => completion.apply(event),
            Entry::Prepared(event) => event.complete(completion),
        }
    }

    /// For a follow-up: the sequence number of the record it completes.
    pub(crate) fn set_statement_seq(&mut self, seq: u64) {
        match self {
            Entry::Plain(event) => event.statement_seq = Some(seq),
            Entry::Prepared(event) => event.statement_seq = Some(seq),
        }
    }
}

impl From<Event> for Entry {
    fn from(event: Event) -> Entry {
        Entry::Plain(Box::new(event))
    }
}

impl From<PreparedEvent> for Entry {
    fn from(event: PreparedEvent) -> Entry {
        Entry::Prepared(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ColumnAction, ColumnTouched};
    use policy::access::{Category, TableName};

    /// An event as the session used to build it: every field copied in.
    fn identity(application_name: Option<&str>, role: Option<&str>) -> Event {
        let mut event = Event::new(EventKind::Statement);
        event.session = Some("42".into());
        event.client = Some("10.1.1.1:5000".into());
        event.user = Some("anna \"the\" auditor\u{e8}\n".into());
        event.role = role.map(str::to_owned);
        event.database = Some("crm".into());
        event.application_name = application_name.map(str::to_owned);
        event
    }

    fn tables() -> Vec<TableTouched> {
        let column = |name: &str, category, action| ColumnTouched {
            name: name.into(),
            category,
            action,
        };
        vec![
            TableTouched {
                table: TableName::new("public", "contacts"),
                columns: vec![
                    column("email", Some(Category::Contact), ColumnAction::Masked),
                    column("region", None, ColumnAction::Filtered),
                    column("id", Some(Category::Identifying), ColumnAction::Shown),
                ],
                row_filtered: true,
                operations: vec!["read".into(), "update".into()],
                categories: vec![Category::Contact, Category::Identifying],
            },
            TableTouched {
                table: TableName::new("crm \"x\"", "notes"),
                columns: vec![column(
                    "body",
                    Some(Category::FreeText),
                    ColumnAction::Denied,
                )],
                row_filtered: false,
                operations: vec!["read".into()],
                categories: vec![Category::FreeText],
            },
            TableTouched::new(TableName::new("public", "deals")),
        ]
    }

    /// `prepared` rendered by the fast path and `plain` by serde: the same JSON, byte for byte.
    fn assert_same(prepared: &PreparedEvent, plain: &Event) {
        let mut fast = b"{".to_vec();
        prepared.write_members(&mut fast);
        fast.push(b'}');
        let fast = String::from_utf8(fast).expect("UTF-8");
        let serde = serde_json::to_string(plain).expect("serialized");
        let value = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(value(&fast), value(&serde), "{fast}\n{serde}");
        assert_eq!(fast, serde);
        assert_eq!(&prepared.to_event(), plain);
    }

    #[test]
    fn access_records_render_as_the_plain_event() {
        for (application_name, role) in [(Some("crm-web"), Some("support")), (None, None)] {
            let who = identity(application_name, role);
            let what = What::new(
                Some("select".into()),
                Some("SELECT email FROM contacts WHERE id = $1".into()),
                tables(),
            );
            let mut prepared = PreparedEvent::new(EventKind::Statement, &Who::new(&who));
            prepared.what = Some(what);
            prepared.outcome = Outcome::Unknown;
            let mut plain = who.clone();
            plain.statement_kind = Some("select".into());
            plain.statement = Some("SELECT email FROM contacts WHERE id = $1".into());
            plain.tables = tables();
            plain.outcome = Outcome::Unknown;
            assert_same(&prepared, &plain);
        }
    }

    #[test]
    fn refused_statements_render_as_the_plain_event() {
        let who = identity(Some("psql"), Some("support"));
        for statement in [
            Some("SELECT * FROM notes WHERE body = $1".to_string()),
            None,
        ] {
            let mut prepared = PreparedEvent::new(EventKind::Statement, &Who::new(&who));
            prepared.what = Some(What::new(None, statement.clone(), tables()));
            prepared.outcome = Outcome::Refused {
                sqlstate: "42501".into(),
                message: Some("permission denied for table \"notes\"".into()),
            };
            let mut plain = who.clone();
            plain.statement = statement;
            plain.tables = tables();
            plain.outcome = prepared.outcome.clone();
            assert_same(&prepared, &plain);
        }
        let mut prepared = PreparedEvent::new(EventKind::Statement, &Who::new(&who));
        prepared.what = Some(What::new(None, None, Vec::new()));
        prepared.outcome = Outcome::Refused {
            sqlstate: "0A000".into(),
            message: None,
        };
        let mut plain = who.clone();
        plain.outcome = prepared.outcome.clone();
        assert_same(&prepared, &plain);
    }

    #[test]
    fn outcome_records_render_as_the_plain_event() {
        let mut short = Event::new(EventKind::Outcome);
        short.session = Some("42".into());
        short.user = Some("anna".into());
        let who = Who::new(&short);
        let cases = [
            (Some(3), Outcome::Ok, Some(800), Some(12), None),
            (None, Outcome::Ok, Some(0), None, None),
            (
                None,
                Outcome::Error {
                    sqlstate: "57014".into(),
                },
                Some(u64::MAX),
                Some(u64::MAX),
                Some("not run: an earlier statement of the same request failed"),
            ),
        ];
        for (rows, outcome, duration_us, statement_seq, detail) in cases {
            let mut prepared = PreparedEvent::new(EventKind::Outcome, &who);
            prepared.rows = rows;
            prepared.outcome = outcome.clone();
            prepared.duration_us = duration_us;
            prepared.statement_seq = statement_seq;
            prepared.detail = detail.map(str::to_owned);
            let mut plain = short.clone();
            plain.rows = rows;
            plain.outcome = outcome;
            plain.duration_us = duration_us;
            plain.statement_seq = statement_seq;
            plain.detail = detail.map(str::to_owned);
            assert_same(&prepared, &plain);
        }
    }

    #[test]
    fn members_are_kept_whatever_the_order_serde_writes() {
        let json =
            r#"{"event":"statement","outcome":{"result":"ok"},"session":"1","tables":[{"a":2}]}"#;
        let members = members_of(json, EventKind::Statement);
        assert_eq!(&*members, r#","session":"1","tables":[{"a":2}]"#);
        let json = r#"{"event":"statement","session":"1","outcome":{"result":"ok"}}"#;
        assert_eq!(
            &*members_of(json, EventKind::Statement),
            r#","session":"1""#
        );
    }

    #[test]
    fn an_empty_identity_renders_no_members() {
        let who = Who::new(&Event::new(EventKind::LoginOk));
        assert_eq!(&*who.json, "");
        assert_same(
            &PreparedEvent::new(EventKind::LoginOk, &who),
            &Event::new(EventKind::LoginOk),
        );
    }
}
