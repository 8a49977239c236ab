//! `Policy::parse`: the policy file's TOML text turned into the validated `model`, every problem
//! reported with file, line and column. It reads the raw file (`file`), checks settings, tables,
//! columns, roles and rules here, and hands the sections of the domain modules to them (`retention`,
//! `erasure`, `controller`, `filter`, `action`, the channel names of `rewrite`). Not for: the types
//! themselves (see `model`) or checks against the live database (see `compile`).

use crate::access::{
    Action, CascadingDeletes, Category, MAX_IDENTIFIER, TableName, UnlistedTables, Writes,
};
use crate::action::{check_fits, parse_action};
use crate::diagnostics::{Diagnostic, Diagnostics, Source, suggest};
use crate::file::{ColumnFile, PolicyFile, RoleFile, RuleFile, TableFile};
use crate::filter::compile_filter;
use crate::framework::{HiddenColumns, TableDefault, UNLISTED_CHOICES};
use crate::model::{
    DeclaredColumn, OBJECT_PREFIX, Policy, Role, Rule, Settings, Span, Table, is_identifier,
};
use serde_spanned::Spanned;
use std::collections::BTreeMap;

fn category_names() -> Vec<&'static str> {
    Category::all().iter().map(|c| c.as_str()).collect()
}

impl Policy {
    /// Parses and validates a policy file; `file` is the name used in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Policy, Diagnostics> {
        let source = Source::new(file, text);
        let raw: PolicyFile =
            toml::from_str(text).map_err(|err| Diagnostics(vec![toml_error(&source, &err)]))?;
        let mut v = Validator {
            source: &source,
            errors: Vec::new(),
        };
        let settings = v.settings(&raw);
        let tables: BTreeMap<String, Table> = raw
            .tables
            .iter()
            .filter_map(|(key, table)| v.table(key, table).map(|t| (t.key.clone(), t)))
            .collect();
        let record_keeping = crate::controller::validate(
            raw.record_keeping_sections(),
            &tables,
            &source,
            &mut v.errors,
        );
        let roles = raw
            .roles
            .iter()
            .filter_map(|(key, role)| {
                v.role(key, role, &tables, &settings)
                    .map(|r| (r.name.clone(), r))
            })
            .collect();
        if !v.errors.is_empty() {
            return Err(Diagnostics(v.errors));
        }
        Ok(Policy {
            file: file.to_string(),
            text: text.to_string(),
            settings,
            roles,
            tables,
            record_keeping,
        })
    }
}

fn toml_error(source: &Source, err: &toml::de::Error) -> Diagnostic {
    let span = err.span().unwrap_or(0..0);
    let message = err.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return source.error(
            span,
            format!("unknown key `{field}`"),
            Some(suggest(field, &valid, "keys")),
        );
    }
    source.error(span, format!("not a valid policy file: {message}"), None)
}

struct Validator<'a> {
    source: &'a Source<'a>,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, help: impl Into<Option<String>>) {
        self.errors
            .push(self.source.error(span, message, help.into()));
    }

    /// The value of a setting that is one of `choices` (by name); an error naming them otherwise.
    fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        setting: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let value = value.as_ref()?;
        let written = value.get_ref().as_str();
        let found = choices.iter().find(|(name, _)| *name == written);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            self.error(
                value.span(),
                format!("unknown value `{written}` for {setting}"),
                suggest(written, &names, "values"),
            );
        }
        found.map(|(_, v)| *v)
    }

    fn settings(&mut self, raw: &PolicyFile) -> Settings {
        let mut settings = Settings {
            unlisted_tables: UnlistedTables::Deny,
            attribute_namespace: "maschera".into(),
            cascading_deletes: CascadingDeletes::Allow,
        };
        let Some(file) = &raw.settings else {
            return settings;
        };
        if let Some(value) = self.choice(&file.unlisted_tables, "unlisted_tables", UNLISTED_CHOICES)
        {
            settings.unlisted_tables = value;
        }
        if let Some(value) = self.choice(
            &file.cascading_deletes,
            "cascading_deletes",
            &[
                ("allow", CascadingDeletes::Allow),
                ("refuse", CascadingDeletes::Refuse),
            ],
        ) {
            settings.cascading_deletes = value;
        }
        if let Some(ns) = &file.attribute_namespace {
            if is_identifier(ns.get_ref()) {
                settings.attribute_namespace = ns.get_ref().clone();
            } else {
                self.error(
                    ns.span(),
                    format!(
                        "attribute namespace `{}` is not a plain identifier",
                        ns.get_ref()
                    ),
                    "use lower-case letters, digits and _, e.g. `maschera`".to_string(),
                );
            }
        }
        settings
    }

    fn category(&mut self, value: &str, span: Span) -> Option<Category> {
        let category = Category::parse(value);
        if category.is_none() {
            self.error(
                span,
                format!("unknown category `{value}`"),
                suggest(value, &category_names(), "categories"),
            );
        }
        category
    }

    fn table(&mut self, key: &Spanned<String>, table: &Spanned<TableFile>) -> Option<Table> {
        let t = table.get_ref();
        let name = match (key.get_ref().split_once('.'), &t.schema) {
            (Some(_), Some(schema)) => {
                self.error(
                    schema.span(),
                    format!("table `{}` already names its schema", key.get_ref()),
                    "remove `schema`, or write the table key without the schema".to_string(),
                );
                return None;
            }
            (Some((schema, name)), None) => TableName::new(schema, name),
            (None, schema) => TableName::new(
                schema
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_else(|| "public".into()),
                key.get_ref().clone(),
            ),
        };
        if name.schema.starts_with(OBJECT_PREFIX) {
            self.error(
                key.span(),
                format!(
                    "schema `{}` is reserved for Maschera's own objects",
                    name.schema
                ),
                None,
            );
        }
        let personal = t
            .personal
            .as_ref()
            .and_then(|p| self.category(p.get_ref(), p.span()));
        let mut columns = BTreeMap::new();
        for (column, declared) in &t.columns {
            let ColumnFile {
                category,
                data_type,
            } = declared.get_ref();
            let category = category.as_ref().and_then(|c| {
                let span = if c.span() == (0..0) {
                    declared.span()
                } else {
                    c.span()
                };
                self.category(c.get_ref(), span)
            });
            if declared.get_ref().category.is_none() && data_type.is_none() {
                self.error(
                    declared.span(),
                    format!("column `{}` declares neither a category nor a type", column.get_ref()),
                    "write `col = \"<category>\"`, or `col = { category = \"...\", type = \"...\" }`".to_string(),
                );
            }
            if let Some(ty) = data_type
                && ty.get_ref().trim().is_empty()
            {
                self.error(
                    ty.span(),
                    "empty column type",
                    "write a PostgreSQL type such as `date`".to_string(),
                );
            }
            columns.insert(
                column.get_ref().clone(),
                DeclaredColumn {
                    category,
                    data_type: data_type.as_ref().map(|t| t.get_ref().trim().to_string()),
                    span: column.span(),
                },
            );
        }
        let retention = t.retention.as_ref().and_then(|r| {
            crate::retention::parse_retention(r.get_ref(), &columns)
                .map_err(|errors| {
                    for e in errors {
                        self.error(e.span, e.message, e.help);
                    }
                })
                .ok()
        });
        let erasure = t
            .erasure
            .as_ref()
            .and_then(|e| {
                crate::erasure::parse_erasure(e.get_ref(), &columns)
                    .map_err(|errors| {
                        for e in errors {
                            self.error(e.span, e.message, e.help);
                        }
                    })
                    .ok()
            })
            .unwrap_or_default();
        let default = self
            .choice(&t.default, "default", TableDefault::CHOICES)
            .unwrap_or_default();
        Some(Table {
            key: key.get_ref().clone(),
            name,
            personal,
            default,
            columns,
            retention,
            erasure,
            span: key.span(),
        })
    }

    fn role(
        &mut self,
        key: &Spanned<String>,
        role: &Spanned<RoleFile>,
        tables: &BTreeMap<String, Table>,
        settings: &Settings,
    ) -> Option<Role> {
        let r = role.get_ref();
        let name = key.get_ref().clone();
        if !is_identifier(&name) || name.len() > MAX_IDENTIFIER - OBJECT_PREFIX.len() {
            self.error(
                key.span(),
                format!("role name `{name}` is not a plain identifier of at most 54 characters"),
                "use lower-case letters, digits and _ (it becomes the login `maschera_<role>`)"
                    .to_string(),
            );
        }
        if name == "private" {
            self.error(
                key.span(),
                "role name `private` is reserved (schema maschera_private)",
                None,
            );
        }
        let unrestricted = r
            .unrestricted
            .as_ref()
            .map(|u| *u.get_ref())
            .unwrap_or(false);
        if unrestricted && let Some((table, _)) = r.tables.iter().next() {
            self.error(
                table.span(),
                format!(
                    "role `{name}` is unrestricted and gets no views, so it takes no table rules"
                ),
                "remove `unrestricted = true` or the role's table rules".to_string(),
            );
        }
        let mut attributes: Vec<String> = Vec::new();
        for attribute in &r.attributes {
            let a = attribute.get_ref();
            if !is_identifier(a) {
                self.error(
                    attribute.span(),
                    format!("attribute `{a}` is not a plain identifier"),
                    None,
                );
            } else if attributes.contains(a) {
                self.error(
                    attribute.span(),
                    format!("attribute `{a}` is listed twice"),
                    None,
                );
            } else {
                attributes.push(a.clone());
            }
        }
        let functions = r
            .functions
            .iter()
            .map(|f| match f.get_ref().contains('.') {
                true => f.get_ref().clone(),
                false => format!("public.{}", f.get_ref()),
            })
            .collect();
        let channels = self.channels(&name, unrestricted, &r.channels);
        let unlisted = self.choice(&r.unlisted_tables, "unlisted_tables", UNLISTED_CHOICES);
        let hidden = self
            .choice(
                &r.dropped_columns,
                "dropped_columns",
                HiddenColumns::CHOICES,
            )
            .unwrap_or_default();
        if unrestricted
            && let Some(setting) = r.unlisted_tables.as_ref().or(r.dropped_columns.as_ref())
        {
            self.error(
                setting.span(),
                format!("role `{name}` is unrestricted: it sees every table and column as stored"),
                "remove `unlisted_tables` / `dropped_columns` from the role".to_string(),
            );
        }
        let lookups_per_minute = self.lookups_per_minute(&name, r.lookups_per_minute.as_ref());
        let mut rules = BTreeMap::new();
        for (table_key, rule) in &r.tables {
            let Some(table) = tables.get(table_key.get_ref()) else {
                let known: Vec<&str> = tables.keys().map(String::as_str).collect();
                self.error(
                    table_key.span(),
                    format!(
                        "role `{name}` has a rule for table `{}`, which [tables] does not declare",
                        table_key.get_ref()
                    ),
                    format!(
                        "declare it under [tables.{}]; {}",
                        table_key.get_ref(),
                        suggest(table_key.get_ref(), &known, "tables")
                    ),
                );
                continue;
            };
            if let Some(rule) = self.rule(table, rule, &attributes, settings, hidden) {
                rules.insert(table.key.clone(), rule);
            }
        }
        if !unrestricted {
            for table in tables.values() {
                if !rules.contains_key(&table.key)
                    && let Some(rule) = table.default.rule(table, hidden)
                {
                    rules.insert(table.key.clone(), rule);
                }
            }
        }
        Some(Role {
            name,
            description: r.description.as_ref().map(|s| s.get_ref().clone()),
            purpose: r.purpose.as_ref().map(|s| s.get_ref().clone()),
            lawful_basis: r.lawful_basis.as_ref().map(|s| s.get_ref().clone()),
            recipients: r.recipients.iter().map(|s| s.get_ref().clone()).collect(),
            unrestricted,
            unlisted,
            hidden,
            attributes,
            functions,
            channels,
            lookups_per_minute,
            rules,
            span: key.span(),
        })
    }

    /// `lookups_per_minute` of a role: 1 to 10000, default [`crate::lookup_sql::DEFAULT_PER_MINUTE`].
    fn lookups_per_minute(&mut self, role: &str, limit: Option<&Spanned<i64>>) -> u32 {
        let Some(limit) = limit else {
            return crate::lookup_sql::DEFAULT_PER_MINUTE;
        };
        match u32::try_from(*limit.get_ref()) {
            Ok(n @ 1..=crate::lookup_sql::MAX_PER_MINUTE) => n,
            _ => {
                self.error(
                    limit.span(),
                    format!(
                        "lookups_per_minute of role `{role}` must be between 1 and {}",
                        crate::lookup_sql::MAX_PER_MINUTE
                    ),
                    None,
                );
                crate::lookup_sql::DEFAULT_PER_MINUTE
            }
        }
    }

    /// `channels = [...]` of a role: valid channel names, each once; an unrestricted role takes none
    /// (it may use every channel).
    fn channels(
        &mut self,
        role: &str,
        unrestricted: bool,
        listed: &[Spanned<String>],
    ) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for channel in listed {
            let c = channel.get_ref();
            let problem = if unrestricted {
                Some("an unrestricted role may use every channel: it takes no `channels`")
            } else if channels.contains(c) {
                Some("this channel is listed twice")
            } else {
                crate::rewrite::channel_name_problem(c)
            };
            match problem {
                Some(problem) => self.error(
                    channel.span(),
                    format!("channel `{c}` of role `{role}`: {problem}"),
                    None,
                ),
                None => channels.push(c.clone()),
            }
        }
        channels
    }

    /// Checks that a rule names a column the table declares (any name passes for whole-table categories,
    /// whose columns need not be listed; `policy check --upstream` checks those against the database).
    fn known_column(&mut self, table: &Table, column: &str, span: &Span) -> bool {
        if table.columns.contains_key(column) || table.personal.is_some() {
            return true;
        }
        let known: Vec<&str> = table.columns.keys().map(String::as_str).collect();
        self.error(
            span.clone(),
            format!("column `{column}` is not declared in [tables.{}.columns]", table.key),
            format!(
                "{}; declare a non-personal column as `{column} = {{ type = \"...\" }}` to name it in a rule",
                suggest(column, &known, "columns")
            ),
        );
        false
    }

    fn rule(
        &mut self,
        table: &Table,
        rule: &Spanned<RuleFile>,
        attributes: &[String],
        settings: &Settings,
        hidden: HiddenColumns,
    ) -> Option<Rule> {
        let r = rule.get_ref();
        let hidden = self
            .choice(
                &r.dropped_columns,
                "dropped_columns",
                HiddenColumns::CHOICES,
            )
            .unwrap_or(hidden);
        let deny = r.deny.as_ref().map(|d| *d.get_ref()).unwrap_or(false);
        if deny
            && (!r.show.is_empty()
                || !r.columns.is_empty()
                || r.filter.is_some()
                || !r.writes.is_empty()
                || r.dropped_columns.is_some()
                || !r.lookup.is_empty()
                || !r.writable.is_empty())
        {
            self.error(
                rule.span(),
                format!(
                    "the rule for `{}` denies the table and also gives columns, a filter or writes",
                    table.key
                ),
                "a denied table takes no other settings: remove them or remove `deny = true`"
                    .to_string(),
            );
        }
        let mut show_all = false;
        let mut show = Vec::new();
        for column in &r.show {
            if column.get_ref() == "*" {
                show_all = true;
            } else if self.known_column(table, column.get_ref(), &column.span()) {
                show.push((column.get_ref().clone(), column.span()));
            }
        }
        let mut actions = BTreeMap::new();
        for (column, action) in &r.columns {
            if !self.known_column(table, column.get_ref(), &column.span()) {
                continue;
            }
            if show.iter().any(|(c, _)| c == column.get_ref()) {
                self.error(
                    column.span(),
                    format!(
                        "column `{}` is both in `show` and in `columns`",
                        column.get_ref()
                    ),
                    "keep one: `show` for the plain value, `columns` for another action"
                        .to_string(),
                );
            }
            match parse_action(action.get_ref()) {
                Ok(parsed) => {
                    let declared = table
                        .columns
                        .get(column.get_ref())
                        .and_then(|c| c.data_type.as_deref());
                    if let Err(message) =
                        check_fits(&parsed, declared.unwrap_or(crate::action::UNKNOWN_TYPE))
                    {
                        self.error(
                            action.span(),
                            message,
                            "choose an action for the column's type".to_string(),
                        );
                    }
                    actions.insert(column.get_ref().clone(), (parsed, action.span()));
                }
                Err(err) => self.error(action.span(), err.message, err.help),
            }
        }
        let filter = r.filter.as_ref().and_then(|f| {
            match compile_filter(f.get_ref(), &settings.attribute_namespace, attributes) {
                Ok(compiled) => Some(compiled),
                Err(err) => {
                    let at = position_in_string(
                        self.source.text,
                        f.span(),
                        f.get_ref(),
                        err.line,
                        err.column,
                    );
                    self.error(at..at, err.message, err.help);
                    None
                }
            }
        });
        let mut writes = Writes::default();
        for write in &r.writes {
            match write.get_ref().as_str() {
                "insert" => writes.insert = true,
                "update" => writes.update = true,
                "delete" => writes.delete = true,
                other => self.error(
                    write.span(),
                    format!("unknown write `{other}`"),
                    suggest(other, &["insert", "update", "delete"], "writes"),
                ),
            }
        }
        let lookup = self.lookup_columns(table, &r.lookup, &show);
        let mut writable = Vec::new();
        for column in &r.writable {
            let name = column.get_ref();
            if !self.known_column(table, name, &column.span()) {
                continue;
            }
            let masked = actions
                .get(name)
                .is_some_and(|(a, _)| !matches!(a, Action::Show | Action::Drop));
            if !masked {
                self.error(
                    column.span(),
                    format!("`writable` names column `{name}`, which the rule does not mask"),
                    "`writable` is for columns `columns` gives a masking or generalising action; `show` columns are writable already and `drop` ones cannot be"
                        .to_string(),
                );
            } else if !(writes.insert || writes.update) {
                self.error(
                    column.span(),
                    format!(
                        "`writable` names column `{name}`, but the rule allows no insert or update"
                    ),
                    "add \"insert\" or \"update\" to `writes`, or remove `writable`".to_string(),
                );
            } else {
                writable.push(name.clone());
            }
        }
        Some(Rule {
            table: table.key.clone(),
            deny,
            show_all,
            show,
            actions,
            filter,
            filter_span: r.filter.as_ref().map(|f| f.span()).unwrap_or(0..0),
            writes,
            hidden,
            lookup,
            writable,
            span: rule.span(),
        })
    }

    /// `lookup = [...]` of a rule: declared columns, each once, none the rule shows as it is.
    fn lookup_columns(
        &mut self,
        table: &Table,
        listed: &[Spanned<String>],
        show: &[(String, Span)],
    ) -> Vec<(String, Span)> {
        let mut lookup: Vec<(String, Span)> = Vec::new();
        for column in listed {
            let c = column.get_ref();
            if !self.known_column(table, c, &column.span()) {
                continue;
            }
            let problem = if lookup.iter().any(|(l, _)| l == c) {
                Some("it is listed twice")
            } else if show.iter().any(|(s, _)| s == c) {
                Some("the role sees it as it is (`show`), so predicates on it need no lookup")
            } else {
                None
            };
            match problem {
                Some(problem) => self.error(
                    column.span(),
                    format!("lookup column `{c}` of table `{}`: {problem}", table.key),
                    None,
                ),
                None => lookup.push((c.clone(), column.span())),
            }
        }
        lookup
    }
}

/// The byte offset in the file of (line, column) inside a TOML string value, when the string is written
/// without escapes (so offsets match); otherwise the start of the value.
fn position_in_string(text: &str, span: Span, value: &str, line: usize, column: usize) -> usize {
    let raw = text.get(span.clone()).unwrap_or("");
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    if raw.len() < 2 * quote {
        return span.start;
    }
    let mut inner = &raw[quote..raw.len() - quote];
    let mut start = span.start + quote;
    if quote == 3
        && let Some(rest) = inner.strip_prefix('\n')
    {
        inner = rest;
        start += 1;
    }
    if inner != value {
        return span.start;
    }
    let mut offset = 0;
    for (i, l) in value.split('\n').enumerate() {
        if i + 1 == line {
            let col: usize = l
                .chars()
                .take(column.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return start + offset + col;
        }
        offset += l.len() + 1;
    }
    span.start
}

#[cfg(test)]
mod tests;
