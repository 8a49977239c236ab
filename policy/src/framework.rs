//! Rules for an application's own tables and for ORM applications: what a framework table (users with
//! password hashes, sessions, history and audit tables, migration bookkeeping, sequences tables of
//! Django, Rails, Laravel, Hibernate, ...) becomes for a restricted role without listing every column,
//! and how a hidden column keeps the relation's shape for an ORM that selects every mapped column.
//!
//! - `dropped_columns = "null"` (per role, or per rule): a column the role may not see stays in its view
//!   as a typed NULL instead of disappearing; writing NULL (unchanged) is accepted, anything else refused.
//! - `[tables.<t>] default = "read" | "write" | "deny"`: what a restricted role without its own rule for
//!   the table gets (its non-personal columns shown, personal and `secret` ones hidden).
//! - `unlisted_tables = "read"` (settings or per role): tables the policy does not name are readable
//!   (SELECT only) as the base table.
//! - the `secret` category (credentials): never shown unless a rule names the column.
//! - `json.mask` and `json.redact`: masks on json, jsonb or text holding JSON that keep the document
//!   valid.
//!
//! Not for: validating or compiling the rest of the policy (`model`, `compile`) or running SQL.

use crate::access::{Action, UnlistedTables, Writes};
pub use crate::action::{fits_json_mask, is_json_type};
use crate::model::{Rule, Table};

/// What a column the role may not see becomes in its view (`dropped_columns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenColumns {
    /// The column is not in the view (a statement naming it is refused).
    #[default]
    Drop,
    /// The column stays in the view, always NULL: ORMs that select every mapped column keep working.
    Null,
}

impl HiddenColumns {
    pub const CHOICES: &'static [(&'static str, HiddenColumns)] =
        &[("drop", HiddenColumns::Drop), ("null", HiddenColumns::Null)];

    /// `action` as this setting renders a hidden column.
    pub fn apply(self, action: Action) -> Action {
        match (self, action) {
            (HiddenColumns::Null, Action::Drop) => Action::Null,
            (_, action) => action,
        }
    }
}

/// `[tables.<t>] default`: what a restricted role that has no rule of its own for the table gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableDefault {
    /// The table does not exist for the role (as for any table without a rule).
    #[default]
    Deny,
    /// Read only: non-personal columns shown, personal ones hidden by privacy by default.
    Read,
    /// As `Read`, and the role may insert, update and delete (setting shown columns only).
    Write,
}

impl TableDefault {
    pub const CHOICES: &'static [(&'static str, TableDefault)] = &[
        ("deny", TableDefault::Deny),
        ("read", TableDefault::Read),
        ("write", TableDefault::Write),
    ];

    /// The rule a role without its own gets for `table`, if any.
    pub fn rule(self, table: &Table, hidden: HiddenColumns) -> Option<Rule> {
        let writes = match self {
            TableDefault::Deny => return None,
            TableDefault::Read => Writes::default(),
            TableDefault::Write => Writes {
                insert: true,
                update: true,
                delete: true,
            },
        };
        Some(Rule {
            table: table.key.clone(),
            deny: false,
            show_all: false,
            show: Vec::new(),
            actions: Default::default(),
            filter: None,
            filter_span: 0..0,
            writes,
            hidden,
            lookup: Vec::new(),
            writable: Vec::new(),
            span: table.span.clone(),
        })
    }
}

/// The values of `unlisted_tables`.
pub const UNLISTED_CHOICES: &[(&str, UnlistedTables)] = &[
    ("deny", UnlistedTables::Deny),
    ("read", UnlistedTables::Read),
    ("pass", UnlistedTables::Pass),
];

/// How `unlisted_tables` is described in warnings.
pub fn unlisted_text(unlisted: UnlistedTables) -> &'static str {
    match unlisted {
        UnlistedTables::Deny => "denied",
        UnlistedTables::Read => "readable (SELECT only) unmasked",
        UnlistedTables::Pass => "passed through unmasked",
    }
}

/// One token of a JSON text: a string (group 1) with the colon that makes it a key (group 2), or a
/// run of anything else (group 3: punctuation, numbers, `true`, `false`, `null`, white space). A string
/// with a raw control character or an invalid escape is no token (a text value then fails the length
/// check below and gets the fallback; json and jsonb values never hold one). No lookahead: PostgreSQL
/// runs this as a DFA, twice as fast.
const JSON_TOKEN: &str =
    r#"("(?:[^"\\[:cntrl:]]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")(\s*:)?|([^"]+)"#;
/// A string token that `json #>> '{}'` cannot turn into text (`\u0000`, a surrogate escape).
const UNTEXTABLE: &str = r"\\u(0000|[dD][89a-fA-F])";
/// What may stand between strings in a JSON text.
const JSON_OTHER: &str = r"^([][{}:,[:space:]0-9eE.+-]|true|false|null)*$";
/// The alias of the token table inside a JSON mask's subquery (unlikely to shadow a column).
const TOKENS: &str = "maschera_json";

/// The SQL expression (of the column's type) of `json.mask` or `json.redact` over column `c` (quoted)
/// of type `data_type`: the text is cut into tokens, each string that is not a key is replaced, and
/// the tokens are joined back in order, so the result is valid JSON with the same keys and shape. A
/// value that is not JSON throughout (a text column's plain text) gets the fallback instead: `"***"`
/// for json types, `***` or the redacted text for text. NULL and '' stay as they are. Built from
/// built-ins only (nothing to install or grant).
pub fn json_expression(c: &str, data_type: &str, action: &Action) -> String {
    let token = |group: u8| format!("{TOKENS}.maschera_token[{group}]");
    let (string, key, other) = (token(1), token(2), token(3));
    let value = match action {
        Action::JsonRedact => {
            let text = format!("({string}::pg_catalog.json #>> '{{}}')");
            format!(
                "CASE WHEN pg_catalog.strpos({string}, E'\\\\u') > 0 AND {string} ~ {untextable} THEN '\"***\"' \
                 ELSE pg_catalog.to_json({})::text END",
                crate::redact::sql_expression(&text),
                untextable = crate::redact::escaped_literal(UNTEXTABLE),
            )
        }
        _ => format!("CASE WHEN {string} = '\"\"' THEN '\"\"' ELSE '\"***\"' END"),
    };
    let fallback = match (is_json_type(data_type), action) {
        (true, _) => "'\"***\"'".to_string(),
        (false, Action::JsonRedact) => crate::redact::sql_expression(&format!("{c}::text")),
        (false, _) => "'***'".to_string(),
    };
    // Text may hold anything between strings; json and jsonb only JSON (the regular expression is
    // the costlier part, so they skip it).
    let between = if is_json_type(data_type) {
        String::new()
    } else {
        format!(
            " AND pg_catalog.bool_and({other} IS NULL OR {other} ~ {})",
            crate::redact::escaped_literal(JSON_OTHER)
        )
    };
    format!(
        "CASE WHEN {c} IS NULL THEN NULL WHEN {c}::text = '' THEN {c} ELSE CAST(COALESCE((SELECT \
         CASE WHEN pg_catalog.sum(pg_catalog.length(COALESCE({string} || COALESCE({key}, ''), {other}))) \
         = pg_catalog.length({c}::text){between} \
         THEN pg_catalog.string_agg(CASE WHEN {string} IS NULL THEN {other} \
         WHEN {key} IS NOT NULL THEN {string} || {key} ELSE {value} END, '' ORDER BY {TOKENS}.maschera_ord) END \
         FROM pg_catalog.regexp_matches({c}::text, {pattern}, 'g') \
         WITH ORDINALITY AS {TOKENS}(maschera_token, maschera_ord)), {fallback}) AS {data_type}) END",
        pattern = crate::redact::escaped_literal(JSON_TOKEN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::access::{RoleAccess, TableAccess, TableName};
    use crate::apply_sql::{ApplyOptions, LiveState, Step, apply_steps};

    const POLICY: &str = r#"
[settings]
unlisted_tables = "read"
[tables.auth_user]
default = "read"
columns = { password = "secret", email = "contact" }
[tables.sessions]
default = "write"
[roles.app]
unlisted_tables = "pass"
[roles.app.tables.auth_user]
show = ["*"]
[roles.desk]
dropped_columns = "null"
[roles.admin]
unrestricted = true
"#;

    fn actions(access: &RoleAccess, table: &str) -> (Vec<(String, Action)>, Writes) {
        match &access.tables[&TableName::new("public", table)] {
            TableAccess::View(view) => (
                view.columns
                    .iter()
                    .map(|c| (c.name.clone(), c.action.clone()))
                    .collect(),
                view.writes,
            ),
            other => panic!("{table}: {other:?}"),
        }
    }

    #[test]
    fn table_defaults_unlisted_modes_and_secrets_compile_per_role() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let catalog = crate::compile::catalog_of(&[
            (
                "auth_user",
                &[("id", "integer"), ("password", "text"), ("email", "text")],
            ),
            ("sessions", &[("key", "text")]),
            ("migrations", &[("version", "text")]),
        ]);
        let access = policy.compile(&catalog).unwrap();
        // (role, password, email, unlisted): `*` never shows a secret; the table's default rule
        // hides personal columns, as NULL under `dropped_columns = "null"`.
        for (role, password, email, unlisted) in [
            ("app", Action::Drop, Action::Show, UnlistedTables::Pass),
            ("desk", Action::Null, Action::Null, UnlistedTables::Read),
        ] {
            let (columns, writes) = actions(&access[role], "auth_user");
            let expected = [
                ("id", Action::Show),
                ("password", password),
                ("email", email),
            ]
            .map(|(c, a)| (c.to_string(), a));
            assert_eq!(columns, expected, "{role}");
            assert_eq!(writes, Writes::default(), "{role}: read only");
            assert_eq!(access[role].unlisted, unlisted, "{role}");
        }
        assert!(actions(&access["desk"], "sessions").1.update, "write");
        let live = LiveState {
            catalog,
            ..Default::default()
        };
        let sql: Vec<String> = apply_steps(&policy, &access, &live, &ApplyOptions::default())
            .unwrap()
            .iter()
            .map(Step::display)
            .collect();
        for expected in [
            "GRANT SELECT ON \"public\".\"migrations\" TO \"maschera_desk\"",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON \"public\".\"migrations\" TO \"maschera_app\"",
        ] {
            assert!(sql.contains(&expected.to_string()), "missing {expected}");
        }
    }

    #[test]
    fn an_unrestricted_role_takes_no_framework_settings() {
        let text = POLICY.replace(
            "[roles.admin]\nunrestricted = true",
            "[roles.admin]\nunrestricted = true\ndropped_columns = \"null\"",
        );
        let err = Policy::parse("p.toml", &text).unwrap_err().to_string();
        assert!(err.contains("role `admin` is unrestricted"), "{err}");
    }

    #[test]
    fn hidden_columns_as_null_keep_every_other_action() {
        assert_eq!(HiddenColumns::Null.apply(Action::Drop), Action::Null);
        assert_eq!(
            HiddenColumns::Null.apply(Action::MaskEmail),
            Action::MaskEmail
        );
        assert_eq!(HiddenColumns::Drop.apply(Action::Drop), Action::Drop);
    }

    #[test]
    fn json_masks_fit_json_types_only_and_keep_keys() {
        assert!(is_json_type("jsonb") && is_json_type("JSON") && !is_json_type("text"));
        assert!(fits_json_mask("text") && fits_json_mask("jsonb") && !fits_json_mask("integer"));
        let sql = json_expression("\"changes\"", "jsonb", &Action::JsonMask);
        assert!(sql.starts_with("CASE WHEN \"changes\" IS NULL THEN NULL WHEN \"changes\"::text = '' THEN \"changes\" ELSE CAST("), "{sql}");
        assert!(sql.ends_with("'\"***\"') AS jsonb) END"), "{sql}");
        assert!(sql.contains("'\"***\"'"), "{sql}");
        let sql = json_expression("\"changes\"", "json", &Action::JsonRedact);
        assert!(
            sql.contains("[email]") && sql.contains("pg_catalog.to_json("),
            "{sql}"
        );
    }
}
