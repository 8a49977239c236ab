//! Lookups for support work: the opt-in rule `lookup = ["email", "phone"]` of a role's table rule lets
//! the role find rows by the exact value of a column it sees masked. This module holds the rule's
//! compiled side: which lookups a role has against a catalog ([`role_lookups`]), their checks against
//! the live database ([`check`]), and the database objects `policy apply` makes for them ([`steps`]).
//!
//! Per role, table and lookup column there is one function in the role's view schema,
//! `maschera_<role>.lookup_<table>_<column>(value <column type>) RETURNS SETOF <key type>`: SQL,
//! `SECURITY DEFINER`, owned by the role's owner role (which reads the base table under the role's
//! row filter), `STRICT`, with a fixed `search_path`. It returns the primary-key values of the rows
//! inside the role's row filter whose column *equals* the argument, nothing else: no pattern, no
//! range, no prefix. Only the role's login may execute it. The proxy rewrites `col = <value>` (and
//! `col IN (<values>)`) on such a column into `key IN (SELECT <function>(<value>))` (see
//! `rewrite::lookup`), so the rows come back through the view, masked as ever.
//!
//! This is the one named exception to the rule that a caller's predicate never sees a raw masked
//! value: a lookup tells whether a row with exactly that value exists inside the filter (and which).
//!
//! Not for: the predicate rewrite (`rewrite::lookup`), the rate limit (the proxy's) or the views.

use crate::access::{Action, Catalog, LookupColumn, Lookups, TableName};
use crate::diagnostics::Diagnostic;
use crate::model::{Policy, Role};
use crate::step::{Step, quote_ident, quote_literal};
use std::collections::BTreeMap;

/// Lookups a user may make per minute when the role does not say (`lookups_per_minute`).
pub const DEFAULT_PER_MINUTE: u32 = 30;
/// The highest `lookups_per_minute` a policy may give.
pub const MAX_PER_MINUTE: u32 = 10_000;

const MAX_IDENTIFIER: usize = 63;

/// The name of the lookup function of `column` of `table` (inside the role's view schema):
/// `lookup_<table>_<column>`, or `lookup_<hash>` when that would exceed PostgreSQL's 63 bytes.
pub fn function_name(table: &TableName, column: &str) -> String {
    let name = format!("lookup_{}_{}", table.name, column);
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    // FNV-1a over the qualified name: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{}.{}.{}", table.schema, table.name, column).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("lookup_{hash:016x}")
}

/// The single-column primary key of `table`, if it has one.
fn single_key<'c>(catalog: &'c Catalog, table: &TableName) -> Option<&'c str> {
    match catalog.primary_keys.get(table).map(Vec::as_slice) {
        Some([key]) => Some(key.as_str()),
        _ => None,
    }
}

/// Every lookup of `role` that `catalog` supports (a single-column primary key the role sees, the
/// column in the role's view). What [`check`] reports as an error is left out: fail closed, the
/// predicate then sees the masked value as without the rule.
pub fn role_lookups(policy: &Policy, role: &Role, catalog: &Catalog) -> Lookups {
    let mut tables: BTreeMap<TableName, BTreeMap<String, LookupColumn>> = BTreeMap::new();
    if !role.unrestricted {
        for (table, rule) in &role.rules {
            let Some(table) = policy.tables.get(table) else {
                continue;
            };
            let Some(live) = catalog.tables.get(&table.name) else {
                continue;
            };
            let Some(key) = single_key(catalog, &table.name) else {
                continue;
            };
            let action = |column: &str| rule.action_for(column, table.category(column));
            if !action(key).is_show() {
                continue;
            }
            for (column, _) in &rule.lookup {
                if !live.iter().any(|c| &c.name == column) || action(column) == Action::Drop {
                    continue;
                }
                tables.entry(table.name.clone()).or_default().insert(
                    column.clone(),
                    LookupColumn {
                        function: function_name(&table.name, column),
                        key: key.to_string(),
                    },
                );
            }
        }
    }
    Lookups {
        tables,
        per_minute: role.lookups_per_minute,
    }
}

/// Errors of lookup rules against a live catalog (one that knows primary keys; a catalog derived
/// from the policy alone does not, and is not checked): the table needs a single-column primary
/// key that the role sees, and the column must be in the role's view.
pub fn check(policy: &Policy, catalog: &Catalog) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if catalog.primary_keys.is_empty() {
        return out;
    }
    for role in policy.restricted_roles() {
        for (table, rule) in &role.rules {
            let Some(table) = policy.tables.get(table) else {
                continue;
            };
            let Some((_, first)) = rule.lookup.first() else {
                continue;
            };
            let Some(key) = single_key(catalog, &table.name) else {
                out.push(policy.error_at(
                    first,
                    format!(
                        "lookup on table `{}` needs a single-column primary key, which the database's table lacks",
                        table.name
                    ),
                    Some("add a primary key, or remove `lookup` from the rule".into()),
                ));
                continue;
            };
            if !rule.action_for(key, table.category(key)).is_show() {
                out.push(policy.error_at(
                    first,
                    format!(
                        "lookup on table `{}` returns rows by their primary key `{key}`, which role `{}` does not see as it is",
                        table.name, role.name
                    ),
                    Some(format!("show `{key}` to the role, or remove `lookup`")),
                ));
            }
            for (column, span) in &rule.lookup {
                if rule.action_for(column, table.category(column)) == Action::Drop {
                    out.push(policy.error_at(
                        span,
                        format!(
                            "lookup column `{column}` is dropped for role `{}`: a lookup needs the column in the role's view (masked)",
                            role.name
                        ),
                        Some(format!("give `{column}` a mask in `columns`, or remove it from `lookup`")),
                    ));
                }
            }
        }
    }
    out
}

/// The lookup functions of one role (run after its view schema is created; `login` is the role's
/// login in this database, `filter` gives a table's row filter SQL for the role, `schemas` the tables'
/// schemas that filters resolve names in).
pub fn steps(
    lookups: &Lookups,
    catalog: &Catalog,
    view_schema: &str,
    login: &str,
    filter: impl Fn(&TableName) -> Option<String>,
    schemas: &[String],
) -> Vec<Step> {
    let owner = quote_ident(&crate::db_lock::owner_role(login));
    let mut search_path = vec![
        "pg_catalog".to_string(),
        crate::db_lock::LOOKUP_SCHEMA.to_string(),
    ];
    search_path.extend(schemas.iter().cloned());
    let mut search_path: Vec<String> = search_path.iter().map(|s| quote_ident(s)).collect();
    // Named, and last: see [`crate::step::FUNCTION_SEARCH_PATH`] (a temporary table or type of the caller's is not
    // searched before the filter's tables and types).
    search_path.push("pg_temp".into());
    let mut steps = Vec::new();
    for (table, columns) in &lookups.tables {
        let Some(live) = catalog.tables.get(table) else {
            continue;
        };
        let type_of = |column: &str| {
            live.iter()
                .find(|c| c.name == column)
                .map(|c| c.data_type.clone())
        };
        for (column, lookup) in columns {
            let (Some(column_type), Some(key_type)) = (type_of(column), type_of(&lookup.key))
            else {
                continue;
            };
            let function = format!(
                "{}.{}({column_type})",
                quote_ident(view_schema),
                quote_ident(&lookup.function)
            );
            let restriction = match filter(table) {
                Some(filter) => format!(" AND ({filter})"),
                None => String::new(),
            };
            let body = format!(
                "SELECT {key} FROM {}.{} WHERE {} = $1{restriction}",
                quote_ident(&table.schema),
                quote_ident(&table.name),
                quote_ident(column),
                key = quote_ident(&lookup.key),
            );
            let mut tag = String::from("maschera_lookup");
            while body.contains(&tag) {
                tag.push('_');
            }
            steps.push(Step::plain(format!(
                "CREATE FUNCTION {function} RETURNS SETOF {key_type} LANGUAGE sql STABLE STRICT \
                 SECURITY DEFINER SET search_path TO {} AS ${tag}${body}${tag}$",
                search_path.join(", ")
            )));
            steps.push(Step::plain(format!(
                "ALTER FUNCTION {function} OWNER TO {owner}"
            )));
            steps.push(Step::plain(format!(
                "REVOKE ALL ON FUNCTION {function} FROM PUBLIC"
            )));
            steps.push(Step::plain(format!(
                "GRANT EXECUTE ON FUNCTION {function} TO {}",
                quote_ident(login)
            )));
            steps.push(Step::plain(format!(
                "COMMENT ON FUNCTION {function} IS {}",
                quote_literal(&format!(
                    "maschera policy: lookup of {table} by exact {column} (keys inside the role's row filter)"
                ))
            )));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(key: &[&str]) -> Catalog {
        let mut catalog = crate::access::catalog_of(&[(
            "contacts",
            &[
                ("id", "bigint"),
                ("email", "text"),
                ("phone", "text"),
                ("region", "text"),
            ],
        )]);
        catalog.primary_keys.insert(
            TableName::new("public", "contacts"),
            key.iter().map(|k| k.to_string()).collect(),
        );
        catalog
    }

    const POLICY: &str = "[tables.contacts.columns]\nid = { type = \"bigint\" }\nemail = \"contact\"\nphone = \"contact\"\n\
        region = { type = \"text\" }\n\
        [roles.support]\nattributes = [\"region\"]\nlookups_per_minute = 5\n\
        [roles.support.tables.contacts]\ncolumns = { email = \"mask.email\", phone = \"mask.last(3)\" }\n\
        lookup = [\"email\", \"phone\"]\nfilter = \"region = attr('region')\"\n\
        [roles.sales.tables.contacts]\ncolumns = { email = \"mask.email\" }\n";

    #[test]
    fn a_role_with_lookup_gets_one_function_per_column_and_others_none() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let catalog = catalog(&["id"]);
        assert!(check(&policy, &catalog).is_empty());
        let lookups = role_lookups(&policy, &policy.roles["support"], &catalog);
        assert_eq!(lookups.per_minute, 5);
        let table = TableName::new("public", "contacts");
        assert_eq!(
            lookups.get(&table, "email"),
            Some(&LookupColumn {
                function: "lookup_contacts_email".into(),
                key: "id".into()
            })
        );
        assert!(lookups.get(&table, "phone").is_some());
        assert!(lookups.get(&table, "region").is_none());
        let sales = role_lookups(&policy, &policy.roles["sales"], &catalog);
        assert!(sales.tables.is_empty());
        assert_eq!(sales.per_minute, DEFAULT_PER_MINUTE);
        let steps = steps(
            &lookups,
            &catalog,
            "maschera_support",
            "maschera_support",
            |_| Some("region = 'north'".into()),
            &["public".into()],
        );
        let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql[0],
            "CREATE FUNCTION \"maschera_support\".\"lookup_contacts_email\"(text) RETURNS SETOF bigint LANGUAGE sql \
             STABLE STRICT SECURITY DEFINER SET search_path TO \"pg_catalog\", \"maschera_lookup\", \"public\", pg_temp \
             AS $maschera_lookup$SELECT \"id\" FROM \"public\".\"contacts\" WHERE \"email\" = $1 AND (region = 'north')$maschera_lookup$"
        );
        assert_eq!(
            sql[1],
            "ALTER FUNCTION \"maschera_support\".\"lookup_contacts_email\"(text) OWNER TO \"maschera_support_owner\""
        );
        assert!(sql[3].ends_with("TO \"maschera_support\""), "{}", sql[3]);
        assert_eq!(sql.len(), 10);
    }

    #[test]
    fn a_table_without_a_single_key_or_a_hidden_key_has_no_lookup() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        for key in [&[][..], &["id", "region"][..]] {
            let mut catalog = catalog(key);
            catalog
                .primary_keys
                .insert(TableName::new("public", "other"), vec!["id".into()]);
            let errors = check(&policy, &catalog);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].message.contains("single-column primary key"),
                "{}",
                errors[0].message
            );
            assert!(
                role_lookups(&policy, &policy.roles["support"], &catalog)
                    .tables
                    .is_empty()
            );
        }
        let hidden = POLICY.replace(
            "id = { type = \"bigint\" }",
            "id = { category = \"identifying\", type = \"bigint\" }",
        );
        let policy = Policy::parse("p.toml", &hidden).unwrap();
        let errors = check(&policy, &catalog(&["id"]));
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("does not see as it is")),
            "{errors:?}"
        );
        assert!(
            role_lookups(&policy, &policy.roles["support"], &catalog(&["id"]))
                .tables
                .is_empty()
        );
    }

    #[test]
    fn lookup_rules_are_validated_where_written() {
        let e = Policy::parse(
            "p.toml",
            &POLICY.replace(
                "lookup = [\"email\", \"phone\"]",
                "lookup = [\"email\", \"emial\", \"email\"]",
            ),
        )
        .unwrap_err()
        .0;
        let messages: Vec<String> = e
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("column `emial` is not declared"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("lookup column `email` of table `contacts`: it is listed twice"),
            "{messages:?}"
        );
        let first_error = |text: &str| {
            Policy::parse("p.toml", text).unwrap_err().0[0]
                .message
                .clone()
        };
        let rule = "[tables.contacts.columns]\nemail = \"contact\"\n[roles.x.tables.contacts]\n";
        for (text, expected) in [
            (
                POLICY.replace("lookups_per_minute = 5", "lookups_per_minute = 0"),
                "lookups_per_minute of role `support` must be between 1 and 10000",
            ),
            (
                format!("{rule}deny = true\nlookup = [\"email\"]\n"),
                "denies the table and also gives",
            ),
            (
                format!("{rule}show = [\"email\"]\nlookup = [\"email\"]\n"),
                "predicates on it need no lookup",
            ),
        ] {
            let message = first_error(&text);
            assert!(message.contains(expected), "{message}");
        }
        let long = TableName::new("public", "t".repeat(60));
        assert_eq!(function_name(&long, "email").len(), "lookup_".len() + 16);
    }
}
