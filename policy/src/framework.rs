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

pub use crate::access::HiddenColumns;
use crate::access::UnlistedTables;
pub use crate::action::{fits_json_mask, is_json_type};
pub use crate::column_sql::json_expression;
pub use crate::model::TableDefault;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::access::{Action, RoleAccess, TableAccess, TableName, Writes};
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
        let catalog = crate::access::catalog_of(&[
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
