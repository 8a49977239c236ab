//! The safety check shared by the rewriter's property tests and its fuzz target: a statement the
//! rewriter accepted for a restricted role must not name a base table of the policy. It parses the
//! rewritten SQL back and looks at every relation it names.
//! Not for: judging whether the output is the right view or the right masking (the unit tests do).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use policy::access::RoleAccess;
use sqlparser::ast::{Ident, ObjectName, Query, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Every relation name in `sql` and every CTE name it defines (lower-cased as PostgreSQL folds
/// unquoted identifiers).
#[derive(Default)]
struct Names {
    relations: Vec<Vec<String>>,
    ctes: BTreeSet<String>,
}

fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts = relation
            .0
            .iter()
            .filter_map(|part| part.as_ident().map(fold))
            .collect();
        self.relations.push(parts);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(fold(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }
}

/// The first base table of `role`'s policy that the rewritten `sql` names, as `schema.table`, if
/// any. A name resolves to a base table when it is `schema.table` of a policy table, or an
/// unqualified policy table name that is not a CTE of the statement (search_path is `public`).
/// `Err` when the rewritten SQL does not parse back.
pub fn base_table_named(sql: &str, role: &RoleAccess) -> Result<Option<String>, String> {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| format!("{e}: {sql}"))?;
    let mut names = Names::default();
    let _ = statements.visit(&mut names);
    for parts in &names.relations {
        for table in role.tables.keys() {
            let hit = match parts.as_slice() {
                [schema, name] => *schema == table.schema && *name == table.name,
                [_, schema, name] => *schema == table.schema && *name == table.name,
                [name] => *name == table.name && !names.ctes.contains(name),
                _ => false,
            };
            if hit {
                return Ok(Some(format!("{}.{}", table.schema, table.name)));
            }
        }
    }
    Ok(None)
}
