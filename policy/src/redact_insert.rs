//! Inserts that set a column the role reads redacted, in the database: such a view column is an
//! expression, which PostgreSQL refuses to write, so `policy apply` gives the view an `INSTEAD OF
//! INSERT` trigger. Its function (owned by the applying account, `SECURITY DEFINER`) inserts the
//! columns the caller gave into the table (the others get the table's defaults; an explicit NULL
//! counts as not given), refuses the row with 44000 when it is outside the role's row filter, and
//! returns the row as the view shows it (masks applied), for `RETURNING`. The caller's column
//! privileges on the view still decide which columns it may name. Not for: updates (a redacted
//! column is never changed; the proxy refuses them and the view has no writable column for them),
//! or masked columns other than `redact`. Interim: the database write path of the RLS rework
//! replaces it.

use crate::access::{Action, Catalog, TableName, ViewAccess};
use crate::apply_sql::{Step, quote_ident, quote_literal, select_list, table_schemas};

/// Whether the role inserts into the view and may set a redacted column there.
pub fn needed(access: &ViewAccess) -> bool {
    access.writes.insert && access.columns.iter().any(|c| c.action == Action::Redact)
}

/// The columns the role may name in an INSERT: its writable ones and, when [`needed`], the redacted.
pub fn insertable(access: &ViewAccess) -> Vec<String> {
    let redact = needed(access);
    access
        .columns
        .iter()
        .filter(|c| c.writable || (redact && c.action == Action::Redact))
        .map(|c| quote_ident(&c.name))
        .collect()
}

/// The trigger function and trigger of the view in the role's view schema `schema` (empty when not [`needed`]).
pub fn steps(
    schema: &str,
    table: &TableName,
    access: &ViewAccess,
    filter: Option<&str>,
    catalog: &Catalog,
) -> Vec<Step> {
    if !needed(access) {
        return Vec::new();
    }
    let base = format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    );
    let view = format!("{}.{}", quote_ident(schema), quote_ident(&access.view));
    let function = format!(
        "{}.{}",
        quote_ident(schema),
        quote_ident(&format!("{}_insert", access.view))
    );
    let search_path: Vec<String> = table_schemas(catalog)
        .iter()
        .map(|s| quote_ident(s))
        .collect();
    let filter_check = match filter {
        Some(filter) => format!(
            "IF NOT EXISTS (SELECT 1 FROM (SELECT (stored).*) AS row_ WHERE ({filter})) THEN\n    \
             RAISE EXCEPTION 'new row violates check option for view %', {} USING ERRCODE = '44000';\n  \
             END IF;\n  ",
            quote_literal(&access.view)
        ),
        None => String::new(),
    };
    let insert = quote_literal(&format!(
        "INSERT INTO {base} (%s) SELECT %s FROM jsonb_populate_record(NULL::{base}, $1) RETURNING *"
    ));
    let body = format!(
        "DECLARE\n  given jsonb := jsonb_strip_nulls(to_jsonb(NEW));\n  columns text;\n  stored {base};\n\
         BEGIN\n  \
         SELECT string_agg(quote_ident(key), ', ') INTO columns FROM jsonb_object_keys(given) AS key;\n  \
         IF columns IS NULL THEN\n    INSERT INTO {base} DEFAULT VALUES RETURNING * INTO stored;\n  \
         ELSE\n    EXECUTE format({insert}, columns, columns) USING given INTO stored;\n  END IF;\n  \
         {filter_check}\
         SELECT {} INTO NEW FROM (SELECT (stored).*) AS row_;\n  RETURN NEW;\nEND",
        select_list(table, access, catalog).join(", ")
    );
    vec![
        Step::plain(format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, {} AS $maschera${body}$maschera$",
            search_path.join(", ")
        )),
        Step::plain(format!("REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")),
        Step::plain(format!(
            "CREATE TRIGGER maschera_insert INSTEAD OF INSERT ON {view} FOR EACH ROW EXECUTE FUNCTION {function}()"
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::TableAccess;

    /// Support's view of `tickets` under a policy that lets it insert (or not).
    fn support_view(catalog: &Catalog, writes: &str) -> ViewAccess {
        let policy = crate::Policy::parse(
            "p.toml",
            &format!(
                "[tables.tickets.columns]\nbody = {{ category = \"free_text\", type = \"text\" }}\n\
                 secret = \"contact\"\n[roles.support.tables.tickets]\n\
                 columns = {{ body = \"redact\" }}\nwrites = [{writes}]\n"
            ),
        )
        .unwrap();
        let access = policy.compile(catalog).unwrap().remove("support").unwrap();
        match access.tables.into_values().next() {
            Some(TableAccess::View(view)) => view,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_inserting_role_with_a_redacted_column_gets_a_trigger_and_the_column_grant() {
        let catalog = crate::compile::catalog_of(&[(
            "tickets",
            &[("id", "bigint"), ("body", "text"), ("secret", "text")],
        )]);
        let table = TableName::new("public", "tickets");
        let reader = support_view(&catalog, "");
        assert!(steps("maschera_support", &table, &reader, None, &catalog).is_empty());
        assert_eq!(insertable(&reader), Vec::<String>::new());
        let inserter = support_view(&catalog, "\"insert\"");
        assert_eq!(insertable(&inserter), ["\"id\"", "\"body\""]);
        let sql: Vec<String> = steps(
            "maschera_support",
            &table,
            &inserter,
            Some("id > 0"),
            &catalog,
        )
        .into_iter()
        .map(|s| s.sql)
        .collect();
        assert_eq!(sql.len(), 3);
        assert!(sql[0].starts_with(
            "CREATE FUNCTION \"maschera_support\".\"tickets_insert\"() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
        ));
        assert!(sql[0].contains("WHERE (id > 0)) THEN"), "{}", sql[0]);
        assert!(sql[0].contains("USING ERRCODE = '44000'"), "{}", sql[0]);
        assert!(
            sql[0].contains("SELECT \"id\", CASE WHEN \"body\"::text ~ '[0-9@]'"),
            "NEW is the row as the view shows it: {}",
            sql[0]
        );
        assert!(!sql[0].contains("secret"), "dropped columns stay out");
        assert_eq!(
            sql[2],
            "CREATE TRIGGER maschera_insert INSTEAD OF INSERT ON \"maschera_support\".\"tickets\" \
             FOR EACH ROW EXECUTE FUNCTION \"maschera_support\".\"tickets_insert\"()"
        );
    }
}
