//! `GROUP BY` a view's primary key (what Django's `annotate()` sends on PostgreSQL): the view's other
//! columns are added, since PostgreSQL knows the key's functional dependency for tables only.

use super::*;

fn with_primary_keys() -> Catalog {
    let mut catalog = fixture::catalog();
    for table in ["contacts", "deals"] {
        catalog
            .primary_keys
            .insert(TableName::new("public", table), vec!["id".to_string()]);
    }
    catalog
}

#[test]
fn grouping_by_a_views_key_groups_by_its_other_columns_too() {
    let support = fixture::role("support");
    let sql = "SELECT c.id, c.email, count(t.id) FROM contacts c LEFT JOIN tickets t ON t.contact_id = c.id GROUP BY c.id";
    let rewritten = rewrite(sql, &support, &with_primary_keys()).unwrap();
    let rewritten = rewritten.sql(sql);
    assert!(
        rewritten.ends_with(
            "GROUP BY c.id, \"c\".\"first_name\", \"c\".\"last_name\", \"c\".\"email\", \"c\".\"phone\", \
             \"c\".\"city\", \"c\".\"region\", \"c\".\"created_at\", \"c\".\"last_activity_at\""
        ),
        "{rewritten}"
    );
    // Dropped columns are not in the view: not added.
    assert!(!rewritten.contains("\"c\".\"tax_code\""), "{rewritten}");
    // Unqualified key of the one view that has it; already grouped columns are not repeated.
    let sql = "SELECT id, count(*) FROM contacts GROUP BY id, city";
    let rewritten = rewrite(sql, &support, &with_primary_keys()).unwrap();
    let rewritten = rewritten.sql(sql);
    assert_eq!(rewritten.matches("city").count(), 1, "{rewritten}");
    assert!(rewritten.contains("\"contacts\".\"email\""), "{rewritten}");
}

#[test]
fn other_groupings_are_left_as_written() {
    let support = fixture::role("support");
    for sql in [
        "SELECT city, count(*) FROM contacts GROUP BY city",
        "SELECT id, count(*) FROM contacts GROUP BY 1",
        "SELECT t.id FROM contacts c JOIN tickets t ON t.contact_id = c.id GROUP BY t.id",
    ] {
        let rewritten = rewrite(sql, &support, &with_primary_keys()).unwrap();
        let rewritten = rewritten.sql(sql);
        assert!(!rewritten.contains("\"email\""), "{sql}: {rewritten}");
    }
    // Without the catalog's primary keys, nothing is added.
    let sql = "SELECT id, count(*) FROM contacts GROUP BY id";
    let rewritten = rewrite(sql, &support, &fixture::catalog()).unwrap();
    assert!(!rewritten.sql(sql).contains("\"email\""));
}
