//! Write-back in the rewriter (the proxy's lock; `crate::write_back` has the rule): an UPDATE may set a
//! column the role reads masked, generalised, pseudonymised, nulled or redacted, and an INSERT may give
//! it a value, but the value is wrapped in `maschera_private.write_back(value, shown, 'refusal')`, so
//! that the statement itself refuses (42501, naming the column) a value other than the one the role
//! reads (on INSERT: other than NULL), with or without the view's trigger. A column the policy makes
//! `writable` is not wrapped: a changed value is stored (the trigger keeps the stored value for one
//! written back unchanged).
//!
//! Not for: which columns exist or may be written at all (`dml.rs`), or the database's own triggers.

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyzer::Analyzer;
use super::refusal::Refusal;
use super::scope::{Item, ItemKind, quoted};
use crate::access::{Action, ColumnAccess};
use crate::write_back::{
    WRITE_BACK_FUNCTION, WriteKind, column_refusal, compared_as_text, view_type,
};

/// How a statement may set one column of its target.
pub(crate) enum Setting<'a> {
    /// As written: a shown (or `writable`) column, or a target that is no policy view.
    Plain,
    /// Only wrapped: a column the role does not read as stored.
    WriteBack(&'a ColumnAccess),
}

impl<'a> Analyzer<'a> {
    /// How `column` of `target` may be set by a write of `kind` (dropped columns are refused), logging
    /// the write of a policy column.
    pub(crate) fn setting(
        &mut self,
        target: &Item<'a>,
        column: &str,
        kind: WriteKind,
    ) -> Result<Setting<'a>, Refusal> {
        let ItemKind::View { table, access } = &target.kind else {
            return Ok(Setting::Plain);
        };
        let Some(col) = access.column(column) else {
            return Ok(Setting::Plain);
        };
        if col.action == Action::Drop {
            return Err(Self::dropped_column(table, column));
        }
        // A new row's redacted text is the caller's own (the role may insert).
        let redact_insert =
            kind == WriteKind::Insert && access.writes.insert && col.action.insertable_masked();
        if !col.action.is_show() && !col.writable && !redact_insert {
            self.log.column(table, column, col.category, &col.action);
            return Ok(Setting::WriteBack(col));
        }
        if !col.writable && !redact_insert {
            return Err(Refusal::denied(format!(
                "permission denied for column {column} of table {table}: role {} may not write it",
                self.role.role
            )));
        }
        self.log.column(table, column, col.category, &col.action);
        Ok(Setting::Plain)
    }

    /// `value` wrapped so that it is refused unless it equals `shown` (an UPDATE: the column as the
    /// role reads it; an INSERT: a NULL of the view column's type).
    pub(crate) fn write_back(
        &mut self,
        value: &mut Expr,
        target: &Item<'a>,
        col: &ColumnAccess,
        kind: WriteKind,
    ) -> Result<(), Refusal> {
        let ItemKind::View { table, access } = &target.kind else {
            return Ok(());
        };
        if is_default(value) {
            return match kind {
                // The view gives such a column no default: the row's default is the table's.
                WriteKind::Insert => Ok(()),
                WriteKind::Update => Err(Refusal::denied(format!(
                    "permission denied for column {} of table {table}: role {} reads it masked and may \
                     only write back the value it reads, not DEFAULT",
                    col.name, self.role.role
                ))),
            };
        }
        let data_type = self
            .catalog
            .tables
            .get(table)
            .and_then(|cols| cols.iter().find(|c| c.name == col.name))
            .map(|c| c.data_type.as_str())
            .unwrap_or("text");
        let data_type = view_type(&col.action, data_type);
        // A type without equality (json, xml, ...) is compared by its text, and the result cast back.
        let by_text = compared_as_text(data_type);
        let compared = if by_text { "text" } else { data_type };
        let shown = match kind {
            // The target's alias, or the view's name (the table's, or given as an alias).
            WriteKind::Update => {
                let shown = Expr::CompoundIdentifier(vec![quoted(&target.name), quoted(&col.name)]);
                if by_text {
                    typed(shown, "text")?
                } else {
                    shown
                }
            }
            WriteKind::Insert => typed(Expr::value(Value::Null), compared)?,
        };
        let refusal = column_refusal(&self.role.role, &access.view, &col.name, kind);
        // Cast to the view column's type: both arguments of the polymorphic function must have one
        // type (a driver may send a `varchar` parameter for a `text` column).
        let original = std::mem::replace(value, Expr::value(Value::Null));
        let mut new_value = typed(original, data_type)?;
        if by_text {
            new_value = typed(new_value, "text")?;
        }
        *value = call(new_value, shown, refusal)?;
        if by_text {
            let checked = std::mem::replace(value, Expr::value(Value::Null));
            *value = typed(checked, data_type)?;
        }
        self.edits.other = true;
        Ok(())
    }
}

/// `DEFAULT` in a VALUES row or a SET (sqlparser reads it as a bare identifier).
fn is_default(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(ident) if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default"))
}

fn parse(sql: &str) -> Result<Expr, Refusal> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| Refusal::unsupported("the write-back of a masked column could not be built"))
}

/// `CAST(<expr> AS <data_type>)`.
fn typed(expr: Expr, data_type: &str) -> Result<Expr, Refusal> {
    let mut parsed = parse(&format!("CAST(NULL AS {data_type})"))?;
    match &mut parsed {
        Expr::Cast { expr: inner, .. } => {
            **inner = expr;
            Ok(parsed)
        }
        _ => Err(Refusal::unsupported(
            "the write-back of a masked column could not be built",
        )),
    }
}

/// `maschera_private.write_back(value, shown, 'refusal')`.
fn call(value: Expr, shown: Expr, refusal: String) -> Result<Expr, Refusal> {
    let mut call = parse(&format!("{WRITE_BACK_FUNCTION}(NULL, NULL, NULL)"))?;
    let Expr::Function(function) = &mut call else {
        return Err(Refusal::unsupported(
            "the write-back of a masked column could not be built",
        ));
    };
    let FunctionArguments::List(list) = &mut function.args else {
        return Err(Refusal::unsupported(
            "the write-back of a masked column could not be built",
        ));
    };
    list.args = [
        value,
        shown,
        Expr::value(Value::SingleQuotedString(refusal)),
    ]
    .into_iter()
    .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
    .collect();
    Ok(call)
}
