//! Writes whose effect reaches past what a role may see: a delete (or a change of a referenced key)
//! that the schema's foreign keys cascade (`ON DELETE CASCADE`, `SET NULL`, `SET DEFAULT`, and the same
//! `ON UPDATE`) into tables the role may not see or may not change, and clear serial keys beside
//! pseudonyms they could be correlated with. `policy check --upstream` warns about both
//! ([`warnings`]); with `settings.cascading_deletes = "refuse"` the rewriter refuses such deletes and
//! key updates ([`delete_cascades`], [`key_update_cascades`], [`refusal_message`]).
//! Not for: foreign-key errors that name hidden constraints (the proxy's error filter handles those),
//! or cascades of the database's own triggers (they are not in the catalog).

use crate::access::{
    Action, Catalog, ForeignKey, ForeignKeyAction, RoleAccess, TableAccess, TableName,
    UnlistedTables, ViewAccess,
};
use crate::action::{TypeFamily, type_family};
use crate::diagnostics::{Diagnostic, Severity};
use crate::model::Policy;
use std::collections::BTreeSet;

/// Why a cascade reaches past the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The table does not exist for the role (denied, or unlisted and denied).
    Hidden,
    /// The role sees the table but may not delete its rows.
    MayNotDelete,
    /// The role sees the table but may not change the referencing columns.
    MayNotUpdate,
}

/// One foreign key through which a write of the role would change rows past what it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade<'c> {
    pub foreign_key: &'c ForeignKey,
    /// `on_delete` or `on_update` of the key, whichever the write sets off.
    pub action: ForeignKeyAction,
    pub reach: Reach,
}

enum Access<'r> {
    Hidden,
    /// Seen through a view (`None`: an unlisted table passed through with every right).
    Visible(Option<&'r ViewAccess>),
}

fn access<'r>(role: &'r RoleAccess, table: &TableName) -> Access<'r> {
    match role.tables.get(table) {
        Some(TableAccess::View(view)) => Access::Visible(Some(view)),
        Some(TableAccess::Denied { .. }) => Access::Hidden,
        None if role.unlisted == UnlistedTables::Pass => Access::Visible(None),
        None => Access::Hidden,
    }
}

fn may_delete(view: Option<&ViewAccess>) -> bool {
    view.is_none_or(|v| v.writes.delete)
}

fn may_update(view: Option<&ViewAccess>, columns: &[String]) -> bool {
    view.is_none_or(|v| {
        v.writes.update
            && columns
                .iter()
                .all(|c| v.column(c).is_some_and(|c| c.writable))
    })
}

/// What a cascade of `action` into the referencing table of `fk` means for the role: `Err` with the
/// reach when it goes past the role, `Ok(true)` when it deletes rows or rewrites keys there that
/// may cascade further (follow it), `Ok(false)` when it stops there. `deleting`: the referenced row
/// is deleted (else its key changes).
fn step(
    role: &RoleAccess,
    fk: &ForeignKey,
    action: ForeignKeyAction,
    deleting: bool,
) -> Result<bool, Reach> {
    let view = match (action, access(role, &fk.table)) {
        (ForeignKeyAction::Refuse, _) => return Ok(false),
        (_, Access::Hidden) => return Err(Reach::Hidden),
        (_, Access::Visible(view)) => view,
    };
    let cascades = action == ForeignKeyAction::Cascade;
    if cascades && deleting {
        return if may_delete(view) {
            Ok(true)
        } else {
            Err(Reach::MayNotDelete)
        };
    }
    if may_update(view, &fk.columns) {
        Ok(cascades)
    } else {
        Err(Reach::MayNotUpdate)
    }
}

/// A row of a table deleted (`None`), or one key column of it changed.
type Change = (TableName, Option<String>);

/// The cascades past the role that `start` sets off, followed through chains of cascades.
fn cascades<'c>(role: &RoleAccess, catalog: &'c Catalog, start: Change) -> Vec<Cascade<'c>> {
    let mut out = Vec::new();
    if role.unrestricted {
        return out;
    }
    let mut seen = BTreeSet::from([start.clone()]);
    let mut queue = vec![start];
    while let Some((parent, key)) = queue.pop() {
        let referencing = catalog.foreign_keys.iter().filter(|k| {
            k.referenced == parent
                && key
                    .as_ref()
                    .is_none_or(|c| k.referenced_columns.contains(c))
        });
        for fk in referencing {
            let action = if key.is_none() {
                fk.on_delete
            } else {
                fk.on_update
            };
            match step(role, fk, action, key.is_none()) {
                Err(reach) => out.push(Cascade {
                    foreign_key: fk,
                    action,
                    reach,
                }),
                Ok(true) => {
                    let next: Vec<Change> = match key {
                        None => vec![(fk.table.clone(), None)],
                        Some(_) => fk
                            .columns
                            .iter()
                            .map(|c| (fk.table.clone(), Some(c.clone())))
                            .collect(),
                    };
                    for change in next {
                        if seen.insert(change.clone()) {
                            queue.push(change);
                        }
                    }
                }
                Ok(false) => {}
            }
        }
    }
    out
}

/// The cascades past the role that deleting rows of `table` sets off (followed through chains of
/// `ON DELETE CASCADE`). Empty for an unrestricted role.
pub fn delete_cascades<'c>(
    role: &RoleAccess,
    catalog: &'c Catalog,
    table: &TableName,
) -> Vec<Cascade<'c>> {
    cascades(role, catalog, (table.clone(), None))
}

/// The cascades past the role that changing `column` of `table` sets off (when a foreign key
/// references it with `ON UPDATE CASCADE`, `SET NULL` or `SET DEFAULT`, followed through chains).
pub fn key_update_cascades<'c>(
    role: &RoleAccess,
    catalog: &'c Catalog,
    table: &TableName,
    column: &str,
) -> Vec<Cascade<'c>> {
    cascades(role, catalog, (table.clone(), Some(column.to_string())))
}

fn reach_text(reach: Reach) -> &'static str {
    match reach {
        Reach::Hidden => "which the role may not see",
        Reach::MayNotDelete => "whose rows the role may not delete",
        Reach::MayNotUpdate => "whose rows the role may not change",
    }
}

/// The message of the refusal of a write that sets off `cascade` (`verb`: "delete from", "update").
pub fn refusal_message(role: &str, verb: &str, table: &TableName, cascade: &Cascade) -> String {
    let fk = cascade.foreign_key;
    format!(
        "permission denied for table {table}: role {role} may not {verb} it, because the change would \
         cascade through foreign key {} ({}) into table {}, {} (settings.cascading_deletes = \"refuse\")",
        fk.name,
        cascade.action.as_sql(),
        fk.table,
        reach_text(cascade.reach)
    )
}

fn warning(
    policy: &Policy,
    role: &str,
    table: &TableName,
    message: String,
    help: &str,
) -> Diagnostic {
    let span = policy
        .table_by_name(table)
        .and_then(|t| policy.roles.get(role)?.rules.get(&t.key))
        .map(|r| r.span.clone())
        .unwrap_or(0..0);
    let mut d = policy.error_at(&span, message, Some(help.to_string()));
    d.severity = Severity::Warning;
    d
}

/// The warnings of `policy check --upstream` about cascades and correlatable keys, for every
/// restricted role (cascades only while `cascading_deletes` is `allow`: with `refuse` the proxy
/// refuses them).
pub fn warnings(policy: &Policy, catalog: &Catalog) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for role in policy.restricted_roles() {
        let access = policy.role_access(role, catalog);
        for (table, table_access) in &access.tables {
            let TableAccess::View(view) = table_access else {
                continue;
            };
            let seen = Seen {
                policy,
                access: &access,
                catalog,
                table,
                view,
            };
            if access.cascading_deletes == crate::access::CascadingDeletes::Allow {
                out.extend(cascade_warnings(&seen));
            }
            out.extend(correlation_warnings(&seen));
        }
    }
    out
}

/// One table as a restricted role has it, for the warnings.
#[derive(Clone, Copy)]
struct Seen<'a> {
    policy: &'a Policy,
    access: &'a RoleAccess,
    catalog: &'a Catalog,
    table: &'a TableName,
    view: &'a ViewAccess,
}

impl<'a> Seen<'a> {
    fn parts(
        &self,
    ) -> (
        &'a Policy,
        &'a RoleAccess,
        &'a Catalog,
        &'a TableName,
        &'a ViewAccess,
    ) {
        (
            self.policy,
            self.access,
            self.catalog,
            self.table,
            self.view,
        )
    }
}

fn cascade_warnings(seen: &Seen) -> Vec<Diagnostic> {
    let (policy, access, catalog, table, view) = seen.parts();
    let mut found: Vec<(&str, Cascade)> = Vec::new();
    if view.writes.delete {
        found.extend(
            delete_cascades(access, catalog, table)
                .into_iter()
                .map(|c| ("delete rows of", c)),
        );
    }
    if view.writes.update {
        for column in view.columns.iter().filter(|c| c.writable) {
            found.extend(
                key_update_cascades(access, catalog, table, &column.name)
                    .into_iter()
                    .map(|c| ("change keys of", c)),
            );
        }
    }
    found
        .into_iter()
        .map(|(verb, cascade)| {
            let fk = cascade.foreign_key;
            warning(
                policy,
                &access.role,
                table,
                format!(
                    "role `{}` may {verb} `{table}`, and constraint `{}` ({} {}) carries that into \
                     `{}`, {}",
                    access.role,
                    fk.name,
                    if verb.starts_with("delete") { "ON DELETE" } else { "ON UPDATE" },
                    cascade.action.as_sql(),
                    fk.table,
                    reach_text(cascade.reach)
                ),
                "set `cascading_deletes = \"refuse\"` under [settings] to have the proxy refuse such \
                 writes, or take the write away from the role",
            )
        })
        .collect()
}

fn is_integer(data_type: &str) -> bool {
    type_family(data_type) == TypeFamily::Number
        && ["smallint", "integer", "bigint", "int"]
            .iter()
            .any(|t| data_type.starts_with(t))
}

fn pseudonymised(action: &Action) -> bool {
    matches!(
        action,
        Action::Pseudonym | Action::TablePseudonym | Action::Hash
    )
}

fn correlation_warnings(seen: &Seen) -> Vec<Diagnostic> {
    let (policy, access, catalog, table, view) = seen.parts();
    let mut out = Vec::new();
    let types = catalog.tables.get(table).map(Vec::as_slice).unwrap_or(&[]);
    let pseudonyms: Vec<&str> = view
        .columns
        .iter()
        .filter(|c| pseudonymised(&c.action))
        .map(|c| c.name.as_str())
        .collect();
    for column in view.columns.iter().filter(|c| c.action.is_show()) {
        let integer = types
            .iter()
            .any(|t| t.name == column.name && is_integer(&t.data_type));
        let key_like = column.name == "id" || column.name.ends_with("_id");
        if integer && key_like && !pseudonyms.is_empty() {
            out.push(warning(
                policy,
                &access.role,
                table,
                format!(
                    "role `{}` sees `{table}.{}` in clear beside the pseudonymised {}: serial keys follow \
                     the order rows were made in and can map pseudonyms back (e.g. `SELECT {}, min({}) \
                     FROM {} GROUP BY 1 ORDER BY 2`)",
                    access.role,
                    column.name,
                    pseudonyms
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    pseudonyms[0],
                    column.name,
                    table.name
                ),
                &format!(
                    "give `{}` the action `pseudonym.table` (a pseudonym that joins to nothing else) or `drop`",
                    column.name
                ),
            ));
        }
        // A clear key that references a column the role sees pseudonymised undoes the pseudonym.
        for fk in catalog
            .foreign_keys
            .iter()
            .filter(|k| &k.table == table && k.columns.contains(&column.name))
        {
            let Some(position) = fk.columns.iter().position(|c| c == &column.name) else {
                continue;
            };
            let Some(referenced) = fk.referenced_columns.get(position) else {
                continue;
            };
            let hidden_behind_pseudonym = matches!(
                access.tables.get(&fk.referenced),
                Some(TableAccess::View(v)) if v.column(referenced).is_some_and(|c| pseudonymised(&c.action))
            );
            if hidden_behind_pseudonym {
                out.push(warning(
                    policy,
                    &access.role,
                    table,
                    format!(
                        "role `{}` sees `{table}.{}` in clear, but the `{}.{referenced}` it references is \
                         pseudonymised: the clear value undoes the pseudonym",
                        access.role, column.name, fk.referenced
                    ),
                    &format!(
                        "give `{}` the same action as `{}.{referenced}`",
                        column.name, fk.referenced
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::CascadingDeletes;

    const POLICY: &str = r#"
[tables.contacts.columns]
id = { category = "identifying", type = "bigint" }
[tables.deals.columns]
id = { type = "bigint" }
contact_id = { category = "financial", type = "bigint" }
[tables.health]
personal = "special_category"

[roles.sales.tables.contacts]
show = ["id"]
writes = ["delete", "update"]
[roles.sales.tables.deals]
show = ["contact_id"]

[roles.analyst.tables.contacts]
columns = { id = "pseudonym" }
[roles.analyst.tables.deals]
columns = { contact_id = "pseudonym" }
"#;

    fn catalog() -> Catalog {
        let mut catalog = crate::access::catalog_of(&[
            ("contacts", &[("id", "bigint")]),
            ("deals", &[("id", "bigint"), ("contact_id", "bigint")]),
            ("health", &[("id", "bigint"), ("contact_id", "bigint")]),
        ]);
        let fk = |name: &str, table: &str, on_delete, on_update| ForeignKey {
            name: name.into(),
            table: TableName::new("public", table),
            columns: vec!["contact_id".into()],
            referenced: TableName::new("public", "contacts"),
            referenced_columns: vec!["id".into()],
            on_delete,
            on_update,
        };
        catalog.foreign_keys = vec![
            fk(
                "deals_contact_id_fkey",
                "deals",
                ForeignKeyAction::Cascade,
                ForeignKeyAction::Refuse,
            ),
            fk(
                "health_contact_id_fkey",
                "health",
                ForeignKeyAction::Cascade,
                ForeignKeyAction::Cascade,
            ),
        ];
        catalog
    }

    #[test]
    fn deletes_and_key_updates_that_cascade_past_the_role_are_found() {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let catalog = catalog();
        let sales = policy.role_access_by_name("sales", &catalog).unwrap();
        let contacts = TableName::new("public", "contacts");
        let found = delete_cascades(&sales, &catalog, &contacts);
        let names: Vec<(&str, Reach)> = found
            .iter()
            .map(|c| (c.foreign_key.name.as_str(), c.reach))
            .collect();
        assert_eq!(
            names,
            [
                ("deals_contact_id_fkey", Reach::MayNotDelete),
                ("health_contact_id_fkey", Reach::Hidden)
            ]
        );
        let message = refusal_message("sales", "delete from", &contacts, &found[1]);
        assert!(
            message.contains("into table public.health, which the role may not see"),
            "{message}"
        );
        let updates = key_update_cascades(&sales, &catalog, &contacts, "id");
        assert_eq!(updates.len(), 1, "only health cascades ON UPDATE");
        assert_eq!(updates[0].reach, Reach::Hidden);
        assert!(key_update_cascades(&sales, &catalog, &contacts, "city").is_empty());

        let warnings: Vec<String> = warnings(&policy, &catalog)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            warnings.iter().any(|w| w.contains(
                "role `sales` may delete rows of `public.contacts`, and constraint `health_contact_id_fkey`"
            ) && w.contains("which the role may not see")),
            "{warnings:#?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains(
                "role `analyst` sees `public.deals.id` in clear beside the pseudonymised `contact_id`"
            ) && w.contains("pseudonym.table")),
            "{warnings:#?}"
        );

        let refusing = Policy::parse(
            "p.toml",
            &format!("[settings]\ncascading_deletes = \"refuse\"\n{POLICY}"),
        )
        .unwrap();
        assert_eq!(
            refusing.settings.cascading_deletes,
            CascadingDeletes::Refuse
        );
        assert!(
            !warnings_of(&refusing, &catalog)
                .iter()
                .any(|w| w.contains("may delete rows")),
            "refused deletes are not warned about"
        );
    }

    fn warnings_of(policy: &Policy, catalog: &Catalog) -> Vec<String> {
        warnings(policy, catalog)
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn a_clear_key_referencing_a_pseudonymised_one_is_warned_about() {
        let policy = Policy::parse(
            "p.toml",
            &POLICY.replace(
                "columns = { contact_id = \"pseudonym\" }",
                "columns = { id = \"pseudonym.table\" }\nshow = [\"contact_id\"]",
            ),
        )
        .unwrap();
        let warnings = warnings_of(&policy, &catalog());
        assert!(
            warnings.iter().any(|w| w.contains(
                "role `analyst` sees `public.deals.contact_id` in clear, but the `public.contacts.id` it references is pseudonymised"
            )),
            "{warnings:#?}"
        );
    }
}
