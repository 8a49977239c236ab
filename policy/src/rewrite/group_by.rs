//! `GROUP BY` on a view's primary key. PostgreSQL lets `GROUP BY t.id` stand for every column of a
//! table `t` whose primary key is `id` (the other columns depend on it), but not of a view: an ORM
//! that groups by the key alone (Django does on PostgreSQL, e.g. `annotate(Count(...))`) gets 42803
//! on the role's view. The rewriter adds the view's other columns to the `GROUP BY`: the groups are
//! the same, since the key determines them (a masked or pseudonymised column is a function of the
//! row).
//!
//! Not for: grouping by anything but the whole primary key of a table the policy routes to a view,
//! nor by position (`GROUP BY 1`).

use sqlparser::ast::{Expr, GroupByExpr, Select};

use super::analyzer::Analyzer;
use super::scope::{ItemKind, Scope, fold, quoted};
use crate::access::Action;

impl<'a> Analyzer<'a> {
    /// Adds to `select`'s `GROUP BY` the other columns of each view whose primary key it holds.
    pub(crate) fn group_by_functional_keys(&mut self, select: &mut Select, level: &Scope<'_, 'a>) {
        let GroupByExpr::Expressions(exprs, modifiers) = &mut select.group_by else {
            return;
        };
        if exprs.is_empty() || !modifiers.is_empty() {
            return;
        }
        // (item, column) pairs the GROUP BY names directly.
        let named: Vec<(String, String)> = exprs
            .iter()
            .filter_map(|expr| column_of(expr, level))
            .collect();
        let mut added = Vec::new();
        for item in &level.items {
            let ItemKind::View { table, access } = &item.kind else {
                continue;
            };
            let Some(key) = self.catalog.primary_keys.get(table) else {
                continue;
            };
            let grouped = |column: &str| {
                named
                    .iter()
                    .any(|(on, name)| on == &item.name && name == column)
            };
            if key.is_empty() || !key.iter().all(|k| grouped(k)) {
                continue;
            }
            for column in access
                .columns
                .iter()
                .filter(|c| c.action != Action::Drop && !grouped(&c.name))
            {
                added.push(Expr::CompoundIdentifier(vec![
                    quoted(&item.name),
                    quoted(&column.name),
                ]));
            }
        }
        if !added.is_empty() {
            exprs.extend(added);
            self.edits.other = true;
        }
    }
}

/// The (item, column) a GROUP BY expression names: `item.column`, or a bare `column` when exactly
/// one item of the level is a view with that column.
fn column_of(expr: &Expr, level: &Scope<'_, '_>) -> Option<(String, String)> {
    match expr {
        Expr::Nested(inner) => column_of(inner, level),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let column = fold(&parts[parts.len() - 1]);
            let item = fold(&parts[parts.len() - 2]);
            level
                .items
                .iter()
                .any(|i| i.name == item)
                .then_some((item, column))
        }
        Expr::Identifier(ident) => {
            let column = fold(ident);
            let mut owners = level.items.iter().filter(|i| match &i.kind {
                ItemKind::View { access, .. } => access.column(&column).is_some(),
                ItemKind::Base { columns, .. } => columns.contains(&column),
                _ => true,
            });
            let owner = owners.next()?;
            owners
                .next()
                .is_none()
                .then(|| (owner.name.clone(), column))
        }
        _ => None,
    }
}
