//! What a restricted role may read of PostgreSQL's ErrorResponse and NoticeResponse frames.
//! PostgreSQL writes stored rows into its errors (`Failing row contains (...)`, key values in
//! constraint DETAILs) and names the objects involved (a foreign-key error on `contacts` names
//! `health_records_contact_id_fkey` on `health_records`: this contact has a health record), whatever
//! the caller's privileges. For a restricted role, every field that may carry a stored value or
//! the name of an object the role cannot see is withheld, field by field, and the frame keeps its
//! SQLSTATE, so that clients and ORMs still tell a unique violation from a not-null one.
//!
//! Field by field (for every SQLSTATE):
//! - `S` `V` `C` `P` `F` `L` `R` (severity, code, position in the caller's statement, PostgreSQL's
//!   source location) pass;
//! - `s` schema, `t` table, `c` column, `d` datatype, `n` constraint pass when they name what the
//!   role sees (a table of its views, a column it does not see dropped, a constraint of such a table
//!   whose name holds no hidden name), else they are left out;
//! - `M` passes unless a name field was left out, it holds a hidden name, or it may come from
//!   database code (class `P0`, e.g. P0001 `RAISE`, or a context inside a function): it is then
//!   replaced by a message that keeps the meaning of the SQLSTATE (23502 not-null, 23503 foreign
//!   key, 23505 unique, 23514 check, 44000 check option, P0001 raised by a function, ...) and says
//!   what was withheld; except a 42501 whose text is exactly one of the refusals Maschera's own write
//!   path raises for this role (`policy::write_back::messages`: fixed texts of the role's name and
//!   names it sees, so nothing a function computes can pass this way);
//! - `D` and `H` pass only for the classes whose details describe the caller's own statement or
//!   session (`0A 08 25 26 34 3D 3F 40 42 53 54 55 57`) and hold no hidden name; for every other
//!   class (23 integrity, 44 check option, 22 data, P0 raised, XX internal, and any unknown class)
//!   they are replaced by a sentence saying they were withheld;
//! - `W` context is always replaced (it quotes the SQL of functions and the lines of COPY data);
//! - `q` and `p` (the query text inside a function and a position in it) and any field code
//!   PostgreSQL may add later are left out.
//!
//! Not for: unrestricted roles (they see PostgreSQL's errors as they are), the proxy's own refusals
//! (made by the relay, never scrubbed), or DataRow and other frames (the relay forwards them as
//! bytes). Pure: the relay calls [`ErrorScrub::scrub`] on the rare error and notice frames.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::ErrorFields;
use bytes::{BufMut, BytesMut};
use policy::access::{Action, Catalog, RoleAccess, TableAccess, UnlistedTables};

/// The DETAIL that replaces one that may show stored values.
pub const DETAIL_WITHHELD: &str =
    "DETAIL withheld by Maschera: it may show stored values or objects hidden from this role";
/// The HINT that replaces one that may show stored values.
pub const HINT_WITHHELD: &str =
    "HINT withheld by Maschera: it may show stored values or objects hidden from this role";
/// The CONTEXT that replaces PostgreSQL's.
pub const CONTEXT_WITHHELD: &str =
    "CONTEXT withheld by Maschera: it may show stored values or the text of database code";

/// SQLSTATE classes whose DETAIL and HINT describe the caller's own statement or session.
const DETAIL_CLASSES: &[&str] = &[
    "0A", "08", "25", "26", "34", "3D", "3F", "40", "42", "53", "54", "55", "57",
];

/// The prefix of the schemas `maschera policy apply` creates.
const OBJECT_PREFIX: &str = "maschera_";

/// Fields that never carry a value or a name.
const PLAIN_FIELDS: &[u8] = b"SVCPFLR";

/// What one restricted role may see named in an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorScrub {
    /// Table (and view) names the role sees, with the columns it sees of each.
    tables: BTreeMap<String, BTreeSet<String>>,
    /// Schemas of those tables, and the role's view schema.
    schemas: BTreeSet<String>,
    /// Names the role must not learn: tables it cannot see, columns dropped for it (none of which
    /// is also a name it sees).
    hidden: BTreeSet<String>,
    /// The exact refusals Maschera's write path raises for this role (`policy::write_back::messages`).
    own_refusals: BTreeSet<String>,
}

impl ErrorScrub {
    /// What `role` sees of `catalog`.
    pub fn for_role(role: &RoleAccess, catalog: &Catalog) -> ErrorScrub {
        let mut scrub = ErrorScrub::default();
        scrub.schemas.insert(role.view_schema.clone());
        let mut hidden = BTreeSet::new();
        for (table, columns) in &catalog.tables {
            let visible: Option<BTreeSet<String>> = match role.tables.get(table) {
                Some(TableAccess::View(view)) => {
                    for column in view.columns.iter().filter(|c| c.action == Action::Drop) {
                        hidden.insert(column.name.clone());
                    }
                    Some(
                        view.columns
                            .iter()
                            .filter(|c| c.action != Action::Drop)
                            .map(|c| c.name.clone())
                            .collect(),
                    )
                }
                Some(TableAccess::Denied { .. }) => None,
                None => match role.unlisted {
                    UnlistedTables::Pass | UnlistedTables::Read => {
                        Some(columns.iter().map(|c| c.name.clone()).collect())
                    }
                    UnlistedTables::Deny => None,
                },
            };
            match visible {
                Some(visible) => {
                    scrub.schemas.insert(table.schema.clone());
                    scrub
                        .tables
                        .entry(table.name.clone())
                        .or_default()
                        .extend(visible);
                }
                None => {
                    hidden.insert(table.name.clone());
                }
            }
        }
        // The policy may name tables the catalog has not got (yet): hidden as well.
        for (table, access) in &role.tables {
            if matches!(access, TableAccess::Denied { .. }) {
                hidden.insert(table.name.clone());
            }
        }
        // The schema of the pseudonym keys, which only the views' owner reads.
        hidden.insert(format!("{OBJECT_PREFIX}private"));
        let seen: BTreeSet<&String> = scrub
            .tables
            .iter()
            .flat_map(|(t, c)| c.iter().chain([t]))
            .collect();
        scrub.hidden = hidden.into_iter().filter(|h| !seen.contains(h)).collect();
        scrub.own_refusals = policy::write_back::messages(role);
        scrub
    }

    /// The frame (type byte included) to send instead of an ErrorResponse (`E`) or NoticeResponse
    /// (`N`) with these fields, or `None` when it passes unchanged.
    pub fn scrub(&self, tag: u8, fields: &ErrorFields<'_>) -> Option<BytesMut> {
        let fields: Vec<(u8, &[u8])> = fields.iter().collect();
        let text = |code: u8| {
            fields
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| String::from_utf8_lossy(v))
        };
        let sqlstate = text(b'C').unwrap_or_default().into_owned();
        let class = sqlstate.get(..2).unwrap_or("");
        let schema = text(b's');
        let table = text(b't');
        let table_seen = table.as_deref().is_some_and(|t| {
            self.tables.contains_key(t)
                && schema.as_deref().is_none_or(|s| self.schemas.contains(s))
        });
        let from_code = class == "P0"
            || text(b'W')
                .is_some_and(|w| w.contains("PL/pgSQL function") || w.contains("SQL function"));
        let details_pass = DETAIL_CLASSES.contains(&class);

        let mut out: Vec<(u8, std::borrow::Cow<'_, [u8]>)> = Vec::with_capacity(fields.len());
        let mut name_withheld = false;
        let mut changed = false;
        for &(code, value) in &fields {
            let value_text = String::from_utf8_lossy(value);
            let keep = match code {
                c if PLAIN_FIELDS.contains(&c) => true,
                b'M' => true, // decided below, once every name field is known
                b's' => self.schemas.contains(value_text.as_ref()),
                b't' => table_seen,
                b'c' => {
                    table_seen
                        && table
                            .as_deref()
                            .and_then(|t| self.tables.get(t))
                            .is_some_and(|columns| columns.contains(value_text.as_ref()))
                }
                b'n' => table_seen && !self.names_hidden(&value_text),
                b'd' => !self.names_hidden(&value_text),
                b'D' | b'H' => details_pass && !self.names_hidden(&value_text),
                _ => false,
            };
            if keep {
                out.push((code, value.into()));
                continue;
            }
            changed = true;
            match code {
                b's' | b't' | b'c' | b'n' | b'd' => name_withheld = true,
                b'D' => out.push((b'D', DETAIL_WITHHELD.as_bytes().into())),
                b'H' => out.push((b'H', HINT_WITHHELD.as_bytes().into())),
                b'W' => out.push((b'W', CONTEXT_WITHHELD.as_bytes().into())),
                _ => {}
            }
        }
        // PostgreSQL sends one message; a malformed frame with several gets each checked.
        for message in out.iter_mut().filter(|(c, _)| *c == b'M') {
            let text = String::from_utf8_lossy(&message.1);
            // Maschera's own write-path refusals pass: fixed texts of names the role sees, no value.
            let own = sqlstate == "42501" && self.own_refusals.contains(text.as_ref());
            if !own && (name_withheld || from_code || self.names_hidden(&text)) {
                message.1 = generic_message(&sqlstate, from_code).into_bytes().into();
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        let len: usize = out.iter().map(|(_, v)| v.len() + 2).sum::<usize>() + 1;
        let mut frame = BytesMut::with_capacity(len + 5);
        frame.put_u8(tag);
        frame.put_i32(i32::try_from(len + 4).unwrap_or(i32::MAX));
        for (code, value) in out {
            frame.put_u8(code);
            // A field value never holds NUL: it came out of a NUL-terminated field or is ours.
            frame.extend_from_slice(&value);
            frame.put_u8(0);
        }
        frame.put_u8(0);
        Some(frame)
    }

    /// Whether `text` (a name, e.g. a constraint's, or a message) holds a hidden name anywhere: a
    /// message is withheld rather than parsed for where PostgreSQL put the names.
    fn names_hidden(&self, text: &str) -> bool {
        self.hidden.iter().any(|h| text.contains(h.as_str()))
    }
}

/// The message that replaces one that named hidden objects or came from database code.
fn generic_message(sqlstate: &str, from_code: bool) -> String {
    let what = match sqlstate {
        "23502" => "null value violates a not-null constraint",
        "23503" => "the statement violates a foreign key constraint",
        "23505" => "duplicate key value violates a unique constraint",
        "23514" => "new row violates a check constraint",
        "23P01" => "the statement violates an exclusion constraint",
        "44000" => "new row violates the row filter of this role",
        "42501" => "permission denied",
        _ if from_code => "error raised by database code",
        _ => "the statement failed",
    };
    let why = if from_code {
        "it comes from database code and may show stored values"
    } else {
        "it names objects hidden from this role or may show stored values"
    };
    format!("{what} (message withheld by Maschera: {why}; SQLSTATE {sqlstate})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Backend;
    use policy::access::{CatalogColumn, ColumnAccess, TableName, ViewAccess, Writes};

    fn scrub() -> ErrorScrub {
        let column = |name: &str| CatalogColumn {
            name: name.into(),
            data_type: "text".into(),
        };
        let mut catalog = Catalog::default();
        for (table, columns) in [
            ("contacts", vec!["id", "first_name", "phone"]),
            ("deals", vec!["id", "contact_id"]),
            ("health_records", vec!["id", "contact_id", "condition"]),
        ] {
            catalog.tables.insert(
                TableName::new("public", table),
                columns.into_iter().map(column).collect(),
            );
        }
        let view = |columns: &[(&str, Action)]| {
            TableAccess::View(ViewAccess {
                view: String::new(),
                columns: columns
                    .iter()
                    .map(|(name, action)| ColumnAccess {
                        name: (*name).into(),
                        category: None,
                        action: action.clone(),
                        writable: true,
                    })
                    .collect(),
                filtered: true,
                writes: Writes::default(),
            })
        };
        let mut tables = BTreeMap::new();
        tables.insert(
            TableName::new("public", "contacts"),
            view(&[
                ("id", Action::Show),
                ("first_name", Action::Show),
                ("phone", Action::Drop),
            ]),
        );
        tables.insert(
            TableName::new("public", "deals"),
            view(&[("id", Action::Show), ("contact_id", Action::Show)]),
        );
        tables.insert(
            TableName::new("public", "health_records"),
            TableAccess::Denied {
                categories: BTreeSet::new(),
            },
        );
        let role = RoleAccess {
            role: "sales".into(),
            unrestricted: false,
            view_schema: "maschera_sales".into(),
            tables,
            unlisted: UnlistedTables::Deny,
            allowed_functions: BTreeSet::new(),
            channels: BTreeSet::new(),
            cascading_deletes: Default::default(),
            lookups: Default::default(),
        };
        ErrorScrub::for_role(&role, &catalog)
    }

    /// The fields of an ErrorResponse body built of `fields` (leaked: a test's few bytes).
    fn well_formed(fields: &[(u8, &str)]) -> ErrorFields<'static> {
        decoded(Box::leak(body(fields).into_boxed_slice()))
    }

    fn decoded(body: &[u8]) -> ErrorFields<'_> {
        match Backend::from_body(b'E', body) {
            Ok(Backend::ErrorResponse(fields)) => fields,
            other => panic!("{other:?}"),
        }
    }

    fn body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (code, value) in fields {
            body.push(*code);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    fn fields(frame: &[u8]) -> Vec<(u8, String)> {
        assert_eq!(
            usize::try_from(u32::from_be_bytes(frame[1..5].try_into().unwrap())).unwrap(),
            frame.len() - 1,
            "length"
        );
        let (Ok(Backend::ErrorResponse(out)) | Ok(Backend::NoticeResponse(out))) =
            Backend::decode(frame)
        else {
            panic!("not a well-formed error or notice: {frame:?}");
        };
        out.iter()
            .map(|(c, v)| (c, String::from_utf8(v.to_vec()).unwrap()))
            .collect()
    }

    fn get(fields: &[(u8, String)], code: u8) -> Option<&str> {
        fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn failing_row_details_are_withheld_and_the_sqlstate_kept() {
        for code in ["23502", "23514", "44000"] {
            let frame = scrub()
                .scrub(
                    b'E',
                    &well_formed(&[
                        (b'S', "ERROR"),
                        (b'C', code),
                        (b'M', "new row for relation \"contacts\" violates check constraint \"contacts_region_check\""),
                        (b'D', "Failing row contains (7, Hidden, +39 333)."),
                        (b's', "public"),
                        (b't', "contacts"),
                        (b'n', "contacts_region_check"),
                    ]),
                )
                .expect("scrubbed");
            let f = fields(&frame);
            assert_eq!(frame[0], b'E');
            assert_eq!(get(&f, b'C'), Some(code));
            assert_eq!(get(&f, b'D'), Some(DETAIL_WITHHELD));
            assert!(
                get(&f, b'M').unwrap().contains("contacts_region_check"),
                "{f:?}"
            );
            assert_eq!(get(&f, b'n'), Some("contacts_region_check"));
            assert!(!format!("{f:?}").contains("Hidden"));
        }
    }

    #[test]
    fn a_foreign_key_of_a_hidden_table_is_not_named() {
        let frame = scrub()
            .scrub(
                b'E',
                &well_formed(&[
                    (b'S', "ERROR"),
                    (b'C', "23503"),
                    (b'M', "update or delete on table \"contacts\" violates foreign key constraint \"health_records_contact_id_fkey\" on table \"health_records\""),
                    (b'D', "Key (id)=(660) is still referenced from table \"health_records\"."),
                    (b's', "public"),
                    (b't', "health_records"),
                    (b'n', "health_records_contact_id_fkey"),
                ]),
            )
            .expect("scrubbed");
        let f = fields(&frame);
        assert_eq!(get(&f, b'C'), Some("23503"));
        assert!(!format!("{f:?}").contains("health"), "{f:?}");
        assert!(get(&f, b'M').unwrap().contains("foreign key"), "{f:?}");
        assert_eq!(get(&f, b't'), None);
        assert_eq!(get(&f, b'n'), None);
    }

    #[test]
    fn dropped_columns_and_raised_messages_are_withheld() {
        let s = scrub();
        let f = fields(
            &s.scrub(
                b'E',
                &well_formed(&[
                    (b'C', "23505"),
                    (
                        b'M',
                        "duplicate key value violates unique constraint \"contacts_phone_key\"",
                    ),
                    (b'D', "Key (phone)=(+39 333) already exists."),
                    (b't', "contacts"),
                    (b'n', "contacts_phone_key"),
                ]),
            )
            .unwrap(),
        );
        assert!(!format!("{f:?}").contains("phone"), "{f:?}");
        assert!(get(&f, b'M').unwrap().starts_with("duplicate key value"));
        let f = fields(
            &s.scrub(
                b'N',
                &well_formed(&[
                    (b'C', "P0001"),
                    (b'M', "secret value"),
                    (b'W', "PL/pgSQL function f() line 3 at RAISE"),
                    (b'q', "select secret"),
                ]),
            )
            .unwrap(),
        );
        assert!(!format!("{f:?}").contains("secret"), "{f:?}");
        assert_eq!(get(&f, b'W'), Some(CONTEXT_WITHHELD));
        assert_eq!(get(&f, b'C'), Some("P0001"));
    }

    #[test]
    fn the_write_paths_own_refusals_pass_and_look_alikes_do_not() {
        let s = scrub();
        let own = policy::write_back::column_refusal(
            "sales",
            "",
            "first_name",
            policy::write_back::WriteKind::Update,
        );
        let raised = |code: &str, message: &str| {
            fields(
                &s.scrub(
                    b'E',
                    &well_formed(&[
                        (b'C', code),
                        (b'M', message),
                        (
                            b'W',
                            "PL/pgSQL function maschera_private.write_back line 1 at RAISE",
                        ),
                    ]),
                )
                .expect("context replaced"),
            )
        };
        assert_eq!(get(&raised("42501", &own), b'M'), Some(own.as_str()));
        // Another SQLSTATE, another role, a hidden column, an added value: withheld.
        for (code, message) in [
            ("P0001", own.clone()),
            ("42501", own.replace("sales", "support")),
            ("42501", own.replace("first_name", "phone")),
            ("42501", format!("{own} 1980-05-17")),
        ] {
            let f = raised(code, &message);
            assert!(get(&f, b'M').unwrap().contains("withheld"), "{f:?}");
        }
    }

    /// Frames of random fields (values drawn from hidden names, visible names, quotes and bytes that
    /// are not UTF-8): never a panic, a well-formed frame with the same SQLSTATE, and no hidden name
    /// in any field that may carry one.
    #[test]
    fn random_frames_never_show_a_hidden_name() {
        let s = scrub();
        let codes = b"SVCMDHWPpqstcdnFLRxZ";
        let pieces: &[&[u8]] = &[
            b"health_records",
            b"health_records_contact_id_fkey",
            b"phone",
            b"contacts",
            b"first_name",
            b"public",
            b"maschera_sales",
            b"maschera_private",
            b"\"",
            b"Failing row contains (",
            b" ",
            b"\xff\xfe",
            b"23505",
            b"P0001",
            b"PL/pgSQL function",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut body = Vec::new();
            let mut sqlstate = None;
            for _ in 0..next(8) {
                let code = codes[next(codes.len())];
                let mut value = Vec::new();
                for _ in 0..next(4) {
                    value.extend_from_slice(pieces[next(pieces.len())]);
                }
                if PLAIN_FIELDS.contains(&code) {
                    // Plain fields pass unchanged: give them no names.
                    value.retain(u8::is_ascii_digit);
                }
                if code == b'C' && sqlstate.is_none() {
                    sqlstate = Some(value.clone());
                }
                body.push(code);
                body.extend_from_slice(&value);
                body.push(0);
            }
            body.push(0);
            let Some(frame) = s.scrub(b'E', &decoded(&body)) else {
                continue;
            };
            let length = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
            assert_eq!(length, frame.len() - 1);
            let Ok(Backend::ErrorResponse(out)) = Backend::decode(&frame) else {
                panic!("not a well-formed error: {frame:?}");
            };
            let out: Vec<(u8, Vec<u8>)> = out.iter().map(|(c, v)| (c, v.to_vec())).collect();
            let first_c = out.iter().find(|(c, _)| *c == b'C').map(|(_, v)| v.clone());
            assert_eq!(first_c, sqlstate);
            for (code, value) in &out {
                let text = String::from_utf8_lossy(value);
                for hidden in ["health_records", "phone", "maschera_private"] {
                    assert!(
                        !text.contains(hidden),
                        "field {} shows {hidden}: {text}",
                        *code as char
                    );
                }
            }
        }
    }

    #[test]
    fn errors_about_the_callers_own_statement_pass_unchanged() {
        let s = scrub();
        assert_eq!(
            s.scrub(
                b'E',
                &well_formed(&[
                    (b'S', "ERROR"),
                    (b'C', "22P02"),
                    (b'M', "invalid input syntax for type bigint: \"abc\""),
                    (b'P', "31"),
                ])
            ),
            None
        );
        assert_eq!(
            s.scrub(
                b'E',
                &well_formed(&[
                    (b'C', "42501"),
                    (b'M', "permission denied for table contacts"),
                    (b'D', "no detail"),
                ])
            ),
            None
        );
        // Malformed bodies do not decode, so they never reach the scrub (the relay ends the
        // session instead).
        assert!(Backend::from_body(b'E', b"Cabc").is_err());
        assert!(Backend::from_body(b'E', b"").is_err());
    }
}
