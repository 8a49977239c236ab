//! Write-back of masked columns (issue 23, item 2): what an ORM's full-model save and create become,
//! what stays refused, and that a `writable` masked column is set as written.

use super::*;

#[test]
fn an_orm_save_wraps_each_masked_column_in_its_write_back() {
    let sql = accepted_sql(
        "sales",
        "UPDATE contacts SET first_name = $1, birth_date = $2, tax_code = $3, city = $4 WHERE id = $5",
    );
    assert!(
        sql.starts_with("UPDATE \"maschera_sales\".\"contacts\" SET first_name = $1, "),
        "{sql}"
    );
    for (column, param, data_type) in [("birth_date", "$2", "DATE"), ("tax_code", "$3", "TEXT")] {
        assert!(
            sql.contains(&format!(
                "{column} = maschera_private.write_back(CAST({param} AS {data_type}), \"contacts\".\"{column}\", 'column \"{column}\" of \"contacts\" is not writable for policy role sales: only the value"
            )),
            "{sql}"
        );
    }
    assert!(sql.contains("city = $4 WHERE id = $5"), "{sql}");
    // An alias qualifies the value the role reads.
    let sql = accepted_sql(
        "sales",
        "UPDATE contacts AS c SET tax_code = 'x' WHERE c.id = 1",
    );
    assert!(
        sql.contains("maschera_private.write_back(CAST('x' AS TEXT), \"c\".\"tax_code\","),
        "{sql}"
    );
}

#[test]
fn an_orm_create_wraps_masked_values_in_a_null_check_of_the_view_type() {
    let sql = accepted_sql(
        "sales",
        "INSERT INTO contacts (id, first_name, birth_date, tax_code) VALUES ($1, $2, $3, $4), (7, 'a', NULL, DEFAULT)",
    );
    assert!(
        sql.contains("maschera_private.write_back(CAST($3 AS DATE), CAST(NULL AS DATE), 'column \"birth_date\" of \"contacts\" is not writable for policy role sales: leave it out or write NULL"),
        "{sql}"
    );
    assert!(
        sql.contains("maschera_private.write_back(CAST($4 AS TEXT), CAST(NULL AS TEXT),"),
        "{sql}"
    );
    assert!(sql.ends_with(", DEFAULT)"), "DEFAULT stays as it is: {sql}");
    // Without a column list, by position.
    let sql = accepted_sql(
        "sales",
        "INSERT INTO contacts VALUES (1, 'a', 'b', 'c', 'd', '2000-01-01')",
    );
    assert!(
        sql.contains("maschera_private.write_back(CAST('2000-01-01' AS DATE), CAST(NULL AS DATE)"),
        "{sql}"
    );
}

#[test]
fn what_cannot_be_wrapped_or_is_not_seen_stays_refused() {
    for (role, sql, names) in [
        (
            "sales",
            "UPDATE contacts SET (first_name, tax_code) = ('a', 'b')",
            "column tax_code",
        ),
        (
            "sales",
            "UPDATE contacts SET tax_code = DEFAULT WHERE id = 1",
            "column tax_code",
        ),
        (
            "sales",
            "INSERT INTO contacts (first_name, tax_code) SELECT first_name, tax_code FROM contacts",
            "column tax_code",
        ),
        (
            "marketing",
            "UPDATE contacts SET phone = 'x'",
            "public.contacts",
        ),
        (
            "support",
            "INSERT INTO contacts (first_name, birth_date) VALUES ('a', NULL)",
            "public.contacts",
        ),
        (
            "sales",
            "INSERT INTO contacts (id, first_name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET tax_code = excluded.tax_code",
            "ON CONFLICT DO UPDATE",
        ),
    ] {
        refused(role, sql, SqlState::InsufficientPrivilege, names);
    }
    // The function is the proxy's, not the caller's.
    refused(
        "sales",
        "UPDATE contacts SET tax_code = maschera_private.write_back('x', tax_code, 'y')",
        SqlState::InsufficientPrivilege,
        "write_back",
    );
}

#[test]
fn a_write_back_is_logged_as_a_write_of_the_masked_column() {
    let statements = accepted("sales", "UPDATE contacts SET tax_code = $1 WHERE id = $2");
    let table = &statements[0].tables[0];
    assert!(table.operations.contains(&TableOperation::Update));
    assert_eq!(
        table.columns.get("tax_code").map(|c| c.action),
        Some(ColumnAction::Masked)
    );
}

#[test]
fn a_writable_masked_column_is_set_as_written() {
    let mut sales = fixture::role("sales");
    if let Some(crate::access::TableAccess::View(view)) =
        sales.tables.get_mut(&TableName::new("public", "contacts"))
    {
        for column in view.columns.iter_mut().filter(|c| c.name == "tax_code") {
            column.writable = true;
        }
    }
    let out = rewrite(
        "UPDATE contacts SET tax_code = $1, birth_date = $2 WHERE id = 1",
        &sales,
        &fixture::catalog(),
    )
    .expect("accepted");
    let sql = &out.statements()[0].sql;
    assert!(
        sql.contains(
            "SET tax_code = $1, birth_date = maschera_private.write_back(CAST($2 AS DATE)"
        ),
        "{sql}"
    );
}

#[test]
fn on_conflict_do_nothing_on_a_trigger_view_tests_the_key_on_the_view() {
    let mut catalog = fixture::catalog();
    catalog.unique_keys.insert(
        TableName::new("public", "contacts"),
        vec![
            vec!["id".into()],
            vec!["email".into()],
            vec!["tax_code".into()],
        ],
    );
    let access = fixture::role("sales");
    let out = rewrite(
        "INSERT INTO contacts (id, first_name, email, region) VALUES ($1, 'a', $2, 'north') ON CONFLICT DO NOTHING RETURNING id",
        &access,
        &catalog,
    )
    .expect("accepted");
    let sql = &out.statements()[0].sql;
    assert!(
        sql.starts_with("INSERT INTO \"maschera_sales\".\"contacts\" (id, first_name, email, region) SELECT * FROM (VALUES (CAST($1 AS BIGINT), CAST('a' AS TEXT), CAST($2 AS TEXT), CAST('north' AS TEXT))) AS maschera_new (\"id\", \"first_name\", \"email\", \"region\") WHERE NOT EXISTS (SELECT 1 FROM \"maschera_sales\".\"contacts\" AS maschera_old WHERE (maschera_old.\"id\" = maschera_new.\"id\") OR (maschera_old.\"email\" = maschera_new.\"email\"))"),
        "{sql}"
    );
    assert!(sql.ends_with("RETURNING id"), "{sql}");
    // With a target, only that key; ON CONSTRAINT is left to PostgreSQL; an unfiltered, all-shown view keeps
    // PostgreSQL's own DO NOTHING.
    let out = rewrite(
        "INSERT INTO deals (id, contact_id, amount, stage) VALUES (1, 1, 1, 'open') ON CONFLICT (id) DO NOTHING",
        &access,
        &catalog,
    )
    .expect("accepted");
    assert!(
        out.statements()[0]
            .sql
            .contains("WHERE NOT EXISTS (SELECT 1 FROM \"maschera_sales\".\"deals\" AS maschera_old WHERE (maschera_old.\"id\" = maschera_new.\"id\"))"),
        "{}",
        out.statements()[0].sql
    );
    let sql = accepted_sql(
        "sales",
        "INSERT INTO deals (id) VALUES (1) ON CONFLICT ON CONSTRAINT deals_pkey DO NOTHING",
    );
    assert!(
        sql.ends_with("ON CONFLICT ON CONSTRAINT deals_pkey DO NOTHING"),
        "{sql}"
    );
    let sql = accepted_sql(
        "support",
        "INSERT INTO consents (id, contact_id, purpose) VALUES (1, 1, 'marketing') ON CONFLICT (id) DO NOTHING",
    );
    assert!(sql.ends_with("ON CONFLICT(id) DO NOTHING"), "{sql}");
}

#[test]
fn on_conflict_do_nothing_leaves_out_the_columns_every_row_gives_as_default() {
    // TypeORM's `orIgnore()`: every mapped column, DEFAULT where the entity has no value.
    let mut catalog = fixture::catalog();
    catalog.unique_keys.insert(
        TableName::new("public", "contacts"),
        vec![vec!["id".into()]],
    );
    let access = fixture::role("sales");
    let out = rewrite(
        "INSERT INTO contacts (id, first_name, birth_date, tax_code, region) VALUES ($1, 'a', DEFAULT, DEFAULT, 'north'), ($2, 'b', DEFAULT, DEFAULT, 'north') ON CONFLICT DO NOTHING RETURNING id",
        &access,
        &catalog,
    )
    .expect("accepted");
    let sql = &out.statements()[0].sql;
    assert!(
        sql.starts_with("INSERT INTO \"maschera_sales\".\"contacts\" (id, first_name, region) SELECT * FROM (VALUES (CAST($1 AS BIGINT), CAST('a' AS TEXT), CAST('north' AS TEXT)), (CAST($2 AS BIGINT), CAST('b' AS TEXT), CAST('north' AS TEXT))) AS maschera_new (\"id\", \"first_name\", \"region\") WHERE NOT EXISTS"),
        "{sql}"
    );
    // DEFAULT in some rows only cannot move into the subquery's VALUES.
    let refusal = rewrite(
        "INSERT INTO contacts (id, first_name, region) VALUES (1, DEFAULT, 'north'), (2, 'b', 'north') ON CONFLICT DO NOTHING",
        &access,
        &catalog,
    )
    .expect_err("refused");
    assert_eq!(
        refusal.sqlstate,
        SqlState::FeatureNotSupported,
        "{refusal:?}"
    );
}

#[test]
fn the_fuzz_seeds_of_write_back_reach_only_views() {
    for sql in [
        "UPDATE contacts AS c SET first_name = $1, tax_code = $2, birth_date = '1980-01-01' WHERE c.id = $3 RETURNING tax_code",
        "INSERT INTO interactions (id, contact_id, channel, notes) VALUES (1, 2, 'call', 'x'), ($1, $2, 'email', NULL) ON CONFLICT (id) DO NOTHING RETURNING id",
        "INSERT INTO contacts (id, first_name, birth_date, tax_code) VALUES (7, 'a', NULL, DEFAULT) ON CONFLICT DO NOTHING",
    ] {
        for role in ["sales", "support"] {
            // `accepted` checks that no rewritten statement names a base table.
            if run(role, sql).is_ok() {
                accepted(role, sql);
            }
        }
    }
}

#[test]
fn a_dropped_column_stays_refused_where_the_role_may_write() {
    let mut support = fixture::role("support");
    if let Some(crate::access::TableAccess::View(view)) = support
        .tables
        .get_mut(&TableName::new("public", "contacts"))
    {
        view.writes.update = true;
        view.writes.insert = true;
        for column in view.columns.iter_mut() {
            column.writable = column.action.is_show();
        }
    }
    let catalog = fixture::catalog();
    for sql in [
        "UPDATE contacts SET first_name = 'a', birth_date = NULL WHERE id = 1",
        "INSERT INTO contacts (first_name, birth_date) VALUES ('a', NULL)",
    ] {
        let refusal = rewrite(sql, &support, &catalog).expect_err(sql);
        assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege, "{sql}");
        assert!(
            refusal.message.contains("column birth_date"),
            "{sql}: {}",
            refusal.message
        );
    }
    // Its masked e-mail is written back, not refused.
    let out = rewrite(
        "UPDATE contacts SET first_name = 'a', email = email WHERE id = 1",
        &support,
        &catalog,
    )
    .expect("write-back");
    assert!(
        out.statements()[0]
            .sql
            .contains("maschera_private.write_back(CAST(email AS TEXT)")
    );
}

/// A column hidden as NULL (`dropped_columns = "null"`) is written back like any masked column: NULL
/// (a literal or a parameter) is the value the role reads; tables read through `unlisted_tables =
/// "read"` refuse writes.
#[test]
fn a_column_hidden_as_null_is_written_back_like_a_masked_one() {
    const POLICY: &str = "[settings]\nunlisted_tables = \"read\"\n[tables.customers.columns]\nemail = \"contact\"\n\
                          [roles.desk]\ndropped_columns = \"null\"\n[roles.desk.tables.customers]\n\
                          writes = [\"insert\", \"update\"]\n";
    let policy = crate::Policy::parse("p.toml", POLICY).unwrap();
    let catalog = crate::compile::catalog_of(&[
        (
            "customers",
            &[("id", "bigint"), ("name", "text"), ("email", "text")],
        ),
        ("schema_migrations", &[("version", "text")]),
    ]);
    let desk = policy.role_access_by_name("desk", &catalog).unwrap();
    for sql in [
        "UPDATE customers SET name = 'x', email = NULL WHERE id = 1",
        "UPDATE customers SET email = 'x@example.org'",
        "INSERT INTO customers (name, email) VALUES ('a', NULL), ('b', 'x@example.org')",
    ] {
        let rewritten =
            rewrite(sql, &desk, &catalog).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
        let rewritten = rewritten.sql(sql);
        assert!(rewritten.contains("write_back"), "{sql}: {rewritten}");
    }
    let prepared = rewrite_prepared("UPDATE customers SET email = $1", &desk, &catalog)
        .unwrap_or_else(|r| panic!("{}", r.message));
    let prepared = prepared.sql("UPDATE customers SET email = $1");
    assert!(prepared.contains("write_back"), "{prepared}");
    for sql in [
        "SELECT id, name, email FROM customers WHERE email IS NULL",
        "SELECT * FROM schema_migrations",
    ] {
        rewrite(sql, &desk, &catalog).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
    }
    for sql in [
        "INSERT INTO schema_migrations VALUES ('1')",
        "DELETE FROM schema_migrations",
    ] {
        let refusal = rewrite(sql, &desk, &catalog).unwrap_err();
        assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege, "{sql}");
    }
}

/// `json` has no equality operator: a JSON document written back is compared with the one the role
/// reads by its text, and the checked text is cast back to `json`.
#[test]
fn a_json_document_is_written_back_by_its_text() {
    const POLICY: &str = "[tables.events.columns]\ndoc = \"contact\"\n\
                          [roles.desk.tables.events]\ncolumns = { doc = \"json.mask\" }\n\
                          writes = [\"insert\", \"update\"]\n";
    let policy = crate::Policy::parse("p.toml", POLICY).unwrap();
    let catalog = crate::compile::catalog_of(&[("events", &[("id", "bigint"), ("doc", "json")])]);
    let desk = policy.role_access_by_name("desk", &catalog).unwrap();
    let sql = "UPDATE events SET doc = $1 WHERE id = 1";
    let rewritten =
        rewrite_prepared(sql, &desk, &catalog).unwrap_or_else(|r| panic!("{}", r.message));
    let rewritten = rewritten.sql(sql);
    assert!(
        rewritten.contains(
            "doc = CAST(maschera_private.write_back(CAST(CAST($1 AS JSON) AS TEXT), CAST(\"events\".\"doc\" AS TEXT), "
        ),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("') AS JSON) WHERE id = 1"),
        "{rewritten}"
    );
}

#[test]
fn an_orm_sync_is_refused_as_the_ddl_it_is() {
    // Sequelize's `sync()`: the refusal names the statement type, not a cut "CREATE TABLE IF NOT".
    let refusal = refused(
        "sales",
        "CREATE TABLE IF NOT EXISTS \"contacts\" (\"id\" BIGINT, PRIMARY KEY (\"id\"))",
        SqlState::InsufficientPrivilege,
        "permission denied: CREATE TABLE is DDL, not allowed for role sales",
    );
    assert!(!refusal.message.contains("IF NOT"), "{}", refusal.message);
}
