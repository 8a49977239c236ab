//! Walks a query's structure: WITH (CTE names shadow tables, recursive ones see themselves), set
//! operations, SELECT levels and their FROM items (tables mapped to views, subqueries, LATERAL,
//! table functions, joins). Expressions are handed to `expr.rs`; DML to `dml.rs`.

use sqlparser::ast::{
    Expr, JoinConstraint, JoinOperator, ObjectName, OrderBy, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableAlias, TableFactor, TableWithJoins,
};

use super::analyzer::{Analyzer, Resolved};
use super::refusal::Refusal;
use super::report::TableOperation;
use super::scope::{CteName, Item, ItemKind, Scope, fold, fold_name, quoted};

/// Output column names of a query level, when known.
pub(crate) type Columns = Option<Vec<String>>;

fn alias_columns(alias: Option<&TableAlias>) -> Columns {
    let alias = alias?;
    if alias.columns.is_empty() {
        None
    } else {
        Some(alias.columns.iter().map(|c| fold(&c.name)).collect())
    }
}

impl<'a> Analyzer<'a> {
    /// Analyses and rewrites a query; `parent` is the enclosing level for correlated subqueries.
    pub(crate) fn query(
        &mut self,
        query: &mut Query,
        parent: Option<&Scope<'_, 'a>>,
    ) -> Result<Columns, Refusal> {
        let mut level = Scope::new(parent);
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                if cte.from.is_some() {
                    return Err(Refusal::unsupported("CTE ... FROM is not supported"));
                }
                let name = fold(&cte.alias.name);
                let declared = alias_columns(Some(&cte.alias));
                if with.recursive {
                    level.ctes.push(CteName {
                        name: name.clone(),
                        columns: declared.clone(),
                    });
                }
                let columns = self.query(&mut cte.query, Some(&level))?;
                let entry = CteName {
                    name,
                    columns: declared.or(columns),
                };
                if with.recursive {
                    level.ctes.pop();
                }
                level.ctes.push(entry);
            }
        }
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Err(Refusal::unsupported(
                "query clause not supported by PostgreSQL",
            ));
        }
        let columns = match query.body.as_mut() {
            SetExpr::Select(select) => self.select(select, &level, query.order_by.as_mut())?,
            body => {
                let columns = self.set_expr(body, &level)?;
                if let Some(order_by) = &mut query.order_by {
                    self.check_exprs(order_by, &level)?;
                }
                columns
            }
        };
        if let Some(limit) = &mut query.limit_clause {
            self.check_exprs(limit, &level)?;
        }
        if let Some(fetch) = &mut query.fetch {
            self.check_exprs(fetch, &level)?;
        }
        Ok(columns)
    }

    fn set_expr(&mut self, body: &mut SetExpr, scope: &Scope<'_, 'a>) -> Result<Columns, Refusal> {
        match body {
            SetExpr::Select(select) => self.select(select, scope, None),
            SetExpr::Query(query) => self.query(query, Some(scope)),
            SetExpr::SetOperation { left, right, .. } => {
                let columns = self.set_expr(left, scope)?;
                self.set_expr(right, scope)?;
                Ok(columns)
            }
            SetExpr::Values(values) => {
                self.check_exprs(values, scope)?;
                Ok(None)
            }
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement) => {
                self.dml(statement, Some(scope))?;
                Ok(None)
            }
            SetExpr::Merge(_) => Err(Refusal::unsupported(
                "MERGE is not supported for restricted roles",
            )),
            SetExpr::Table(_) => Err(Refusal::unsupported(
                "TABLE name is not supported: use SELECT * FROM name",
            )),
        }
    }

    fn select(
        &mut self,
        select: &mut Select,
        parent: &Scope<'_, 'a>,
        order_by: Option<&mut OrderBy>,
    ) -> Result<Columns, Refusal> {
        if select.into.is_some() {
            return Err(Refusal::denied(
                "permission denied: SELECT INTO creates a table",
            ));
        }
        let mut level = Scope::new(Some(parent));
        let mut from = std::mem::take(&mut select.from);
        let result = self.select_level(select, &mut from, &mut level, order_by);
        select.from = from;
        result
    }

    fn select_level(
        &mut self,
        select: &mut Select,
        from: &mut [TableWithJoins],
        level: &mut Scope<'_, 'a>,
        order_by: Option<&mut OrderBy>,
    ) -> Result<Columns, Refusal> {
        for item in from.iter_mut() {
            self.table_with_joins(item, level)?;
        }
        self.wildcards(&select.projection, level)?;
        self.check_exprs(select, level)?;
        if let Some(order_by) = order_by {
            self.check_exprs(order_by, level)?;
        }
        self.group_by_functional_keys(select, level);
        Ok(output_columns(&select.projection, level))
    }

    /// Logs what `*` and `t.*` in a projection or RETURNING list read.
    pub(crate) fn wildcards(
        &mut self,
        projection: &[SelectItem],
        level: &Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        for item in projection {
            match item {
                SelectItem::Wildcard(_) => {
                    for from_item in &level.items {
                        self.log_whole_row(from_item);
                    }
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    let parts = fold_name(name)?;
                    if let Some(from_item) = parts.last().and_then(|q| level.item(q)) {
                        self.log_whole_row(from_item);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn table_with_joins(
        &mut self,
        item: &mut TableWithJoins,
        level: &mut Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        self.table_factor(&mut item.relation, level)?;
        for join in &mut item.joins {
            self.table_factor(&mut join.relation, level)?;
            let constraint = match &mut join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => c,
                _ => {
                    return Err(Refusal::unsupported(
                        "join type not supported by PostgreSQL",
                    ));
                }
            };
            match constraint {
                JoinConstraint::On(expr) => self.check_exprs(expr, level)?,
                JoinConstraint::Using(names) => {
                    for name in names.iter() {
                        for column in fold_name(name)? {
                            self.unqualified_column(&column, level)?;
                        }
                    }
                }
                JoinConstraint::Natural | JoinConstraint::None => {}
            }
        }
        Ok(())
    }

    fn table_factor(
        &mut self,
        factor: &mut TableFactor,
        level: &mut Scope<'_, 'a>,
    ) -> Result<(), Refusal> {
        let item = match factor {
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } => {
                self.function(name)?;
                self.check_exprs(args, level)?;
                derived(alias.as_ref(), name, None)
            }
            TableFactor::Table { .. } => match self.table_statistics(factor)? {
                Some(item) => item,
                None => self.table_reference(factor, level, TableOperation::Read)?,
            },
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample,
            } => {
                if sample.is_some() {
                    return Err(Refusal::unsupported("TABLESAMPLE is not supported"));
                }
                let columns = if *lateral {
                    self.query(subquery, Some(level))?
                } else {
                    self.query(subquery, level.parent)?
                };
                Item {
                    name: alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default(),
                    schema: None,
                    kind: ItemKind::Derived {
                        columns: alias_columns(alias.as_ref()).or(columns),
                    },
                }
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                self.function(name)?;
                self.check_exprs(args, level)?;
                derived(alias.as_ref(), name, None)
            }
            TableFactor::TableFunction { expr, alias } => {
                self.check_exprs(expr, level)?;
                let name = match expr {
                    Expr::Function(f) => f.name.clone(),
                    _ => ObjectName::from(vec![quoted("")]),
                };
                derived(alias.as_ref(), &name, None)
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                self.check_exprs(array_exprs, level)?;
                derived(
                    alias.as_ref(),
                    &ObjectName::from(vec![quoted("unnest")]),
                    None,
                )
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.table_with_joins(table_with_joins, level)?;
                match alias {
                    Some(alias) => Item {
                        name: fold(&alias.name),
                        schema: None,
                        kind: ItemKind::Derived { columns: None },
                    },
                    None => return Ok(()),
                }
            }
            _ => {
                return Err(Refusal::unsupported(
                    "FROM item not supported by PostgreSQL",
                ));
            }
        };
        level.items.push(item);
        Ok(())
    }

    /// Resolves a plain table reference (FROM item or DML target), rewrites it to the role's view or
    /// the qualified base table, and returns its FROM item.
    pub(crate) fn table_reference(
        &mut self,
        factor: &mut TableFactor,
        scope: &Scope<'_, 'a>,
        op: TableOperation,
    ) -> Result<Item<'a>, Refusal> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } = factor
        else {
            return Err(Refusal::unsupported("table reference form not supported"));
        };
        if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
            return Err(Refusal::unsupported(
                "table hints are not supported by PostgreSQL",
            ));
        }
        let resolved = self.resolve(name, scope, op)?;
        let alias_name = alias.as_ref().map(|a| fold(&a.name));
        let alias_columns = alias_columns(alias.as_ref());
        let written = fold_name(name)?;
        let relation = written.last().cloned().unwrap_or_default();
        Ok(match resolved {
            Resolved::Cte(cte) => Item {
                name: alias_name.unwrap_or(cte.name),
                schema: None,
                kind: ItemKind::Derived {
                    columns: alias_columns.or(cte.columns),
                },
            },
            Resolved::Relation(kind @ (ItemKind::System | ItemKind::Derived { .. })) => Item {
                name: alias_name.unwrap_or(relation),
                schema: None,
                kind,
            },
            Resolved::Relation(ItemKind::View { table, access }) => {
                let added_alias =
                    (alias.is_none() && access.view != table.name).then(|| quoted(&table.name));
                if let Some(added) = &added_alias {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: added.clone(),
                        columns: Vec::new(),
                        at: None,
                    });
                }
                self.rename(name, self.view_name(access), added_alias);
                let schema = alias_name.is_none().then(|| table.schema.clone());
                Item {
                    name: alias_name.unwrap_or_else(|| table.name.clone()),
                    schema,
                    kind: ItemKind::View { table, access },
                }
            }
            Resolved::Relation(ItemKind::Base { table, columns }) => {
                self.rename(name, Self::base_name(&table), None);
                let schema = alias_name.is_none().then(|| table.schema.clone());
                Item {
                    name: alias_name.unwrap_or_else(|| table.name.clone()),
                    schema,
                    kind: ItemKind::Base { table, columns },
                }
            }
        })
    }
}

/// The FROM item of a function or other derived source.
fn derived<'a>(
    alias: Option<&TableAlias>,
    function: &ObjectName,
    columns: Option<Vec<String>>,
) -> Item<'a> {
    let name = match alias {
        Some(alias) => fold(&alias.name),
        None => fold_name(function)
            .ok()
            .and_then(|p| p.last().cloned())
            .unwrap_or_default(),
    };
    Item {
        name,
        schema: None,
        kind: ItemKind::Derived {
            columns: alias_columns(alias).or(columns),
        },
    }
}

/// The names of a projection's output columns, when all are known.
fn output_columns(projection: &[SelectItem], level: &Scope<'_, '_>) -> Columns {
    let mut columns = Vec::new();
    for item in projection {
        match item {
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => columns.push(fold(ident)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(idents)) => {
                columns.push(fold(idents.last()?))
            }
            SelectItem::UnnamedExpr(Expr::Function(f)) => {
                columns.push(fold_name(&f.name).ok()?.last()?.clone());
            }
            SelectItem::UnnamedExpr(_) => columns.push("?column?".to_string()),
            SelectItem::ExprWithAlias { alias, .. } => columns.push(fold(alias)),
            SelectItem::Wildcard(_) => {
                for from_item in &level.items {
                    columns.extend(from_item.visible_columns()?);
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let parts = fold_name(name).ok()?;
                columns.extend(level.item(parts.last()?)?.visible_columns()?);
            }
            _ => return None,
        }
    }
    Some(columns)
}
