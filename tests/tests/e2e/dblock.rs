//! The database lock on its own: the reference policy applied by the real binary, then attacked by
//! connecting straight to PostgreSQL as a role's login (no proxy): a caller's predicates and a leaky
//! function never see a hidden row or a raw masked value, upserts cannot reach rows outside the filter,
//! the objects fail closed when a direct migration removes part of the protection, every filter of the
//! reference policy works (marketing's reads its own table), and writes follow the reference matrix.
//! Not for: the matrix cell by cell (see `policy`), or the proxy's own refusals (see `enforce`).

use crate::policy::{Crm, DB, ids, one, refused, text};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use tokio_postgres::{AsyncMessage, Client};

/// A connection as the role's login with every NOTICE it receives collected.
async fn with_notices(crm: &Crm, role: &str, region: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let mut config: tokio_postgres::Config = crm
        .pg
        .uri_as(&format!("maschera_{role}"), &crm.password(role), DB)
        .parse()
        .expect("uri");
    config.options(maschera_tests::seal::region_options(
        &crm.pg,
        DB,
        &format!("maschera_{role}"),
        region,
    ));
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as role login");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = stream.next().await {
            if let AsyncMessage::Notice(notice) = message {
                sink.lock().unwrap().push(notice.message().to_string());
            }
        }
    });
    (client, notices)
}

/// A plpgsql function that tells what it is called with, cheap enough for the planner to run it first.
fn create_leaky_function(crm: &Crm) {
    crm.pg
        .psql(
            DB,
            &[
                "-c",
                "CREATE FUNCTION public.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS \
                 $$ BEGIN RAISE NOTICE 'leak:%', $1; RETURN true; END $$; \
                 GRANT EXECUTE ON FUNCTION public.leak(text) TO maschera_sales, maschera_marketing",
            ],
        )
        .expect("leaky function");
}

fn seen(notices: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    let mut seen: Vec<String> = std::mem::take(&mut *notices.lock().unwrap())
        .into_iter()
        .filter_map(|n| n.strip_prefix("leak:").map(str::to_string))
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test]
async fn a_leaky_function_sees_neither_hidden_rows_nor_raw_masked_values() {
    let crm = Crm::start();
    create_leaky_function(&crm);
    let (sales, notices) = with_notices(&crm, "sales", "north").await;
    // Contacts 1 and 3 are north; 2 (south) and 4 (centre) are hidden; tax codes are masked.
    let rows = text(
        &sales,
        "SELECT id::text FROM contacts WHERE public.leak(region) AND public.leak(tax_code) \
         AND public.leak(email) AND public.leak(birth_date::text) ORDER BY id",
    )
    .await;
    assert_eq!(rows, [Some("1".into()), Some("3".into())]);
    let leaked = seen(&notices);
    assert!(leaked.contains(&"north".to_string()), "{leaked:?}");
    for hidden in [
        "south",
        "centre",
        "giulia@example.it",
        "anna@example.it",
        "RSSMRA80E17F205X",
        "1980-05-17",
    ] {
        assert!(
            !leaked.iter().any(|v| v.contains(hidden)),
            "{hidden} reached the function: {leaked:?}"
        );
    }
    assert!(
        leaked.contains(&"************205X".to_string()),
        "{leaked:?}"
    );
    assert!(leaked.contains(&"1980-01-01".to_string()), "{leaked:?}");

    // A child table: the function only ever sees interactions of north contacts.
    let rows = text(&sales, "SELECT id::text FROM interactions WHERE public.leak(contact_id::text) AND public.leak(notes)").await;
    assert_eq!(rows, [Some("1".into())]);
    assert_eq!(seen(&notices), ["1", "asked about pricing"]);

    // Errors of a caller's predicate are no oracle either: a cast that fails on every value only runs
    // on visible rows (the one-row answer shows it ran on contact 1 and 3's values only).
    assert_eq!(
        one(
            &sales,
            "SELECT count(*)::text FROM contacts WHERE length(email) > 0"
        )
        .await,
        "2"
    );
}

#[tokio::test]
async fn an_upsert_cannot_read_or_change_a_row_outside_the_filter() {
    let crm = Crm::start();
    create_leaky_function(&crm);
    let (sales, notices) = with_notices(&crm, "sales", "north").await;
    let upserts = [
        // The hidden south contact 2 through its id and its e-mail.
        "INSERT INTO contacts (id, first_name, last_name, email, phone, street_address, region) VALUES \
         (2, 'x', 'x', 'x@x.invalid', '+39 000 0000000', 'x', 'north') ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name",
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES \
         (99, 'x', 'x', 'giulia@example.it', '+39 000 0000000', 'north') ON CONFLICT (email) DO UPDATE SET first_name = NULL",
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES \
         (2, 'x', 'x', 'x@x.invalid', '+39 000', 'north') ON CONFLICT (id) DO UPDATE SET region = 'north' RETURNING *",
        // The WHERE oracle on the existing row, true and false, and a leaky function there.
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES \
         (2, 'x', 'x', 'x@x.invalid', '+39 000', 'north') ON CONFLICT (id) DO UPDATE SET first_name = 'x' WHERE contacts.email LIKE 'g%'",
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES \
         (2, 'x', 'x', 'x@x.invalid', '+39 000', 'north') ON CONFLICT (id) DO UPDATE SET first_name = 'x' WHERE contacts.email LIKE 'z%'",
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES \
         (2, 'x', 'x', 'x@x.invalid', '+39 000', 'north') ON CONFLICT (id) DO UPDATE SET first_name = 'x' WHERE public.leak(contacts.email)",
        // Child tables: re-attaching another region's deal, reading an interaction's note.
        "INSERT INTO deals (id, contact_id, amount, stage) VALUES (2, 1, 1, 'open') ON CONFLICT (id) DO UPDATE SET contact_id = 1",
        "INSERT INTO interactions (id, contact_id, channel, notes) VALUES (2, 1, 'call', 'x') \
         ON CONFLICT (id) DO UPDATE SET notes = substr(interactions.notes, 1, 60)",
        "WITH w AS (INSERT INTO deals (id, contact_id, amount, stage) VALUES (2, 1, 1, 'open') \
         ON CONFLICT (id) DO UPDATE SET stage = deals.stage RETURNING *) SELECT * FROM w",
    ];
    for sql in upserts {
        let err = sales.batch_execute(sql).await.expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "42P10", "{sql}: {db:?}");
        let said = format!("{db:?}");
        for hidden in [
            "Giulia",
            "Bianchi",
            "giulia@example.it",
            "complained",
            "2500",
        ] {
            assert!(!said.contains(hidden), "{sql}: {said}");
        }
    }
    assert_eq!(seen(&notices), Vec::<String>::new(), "the WHERE never ran");
    let owner = |sql: &str| crm.pg.psql(DB, &["-Atc", sql]).expect("owner query");
    assert_eq!(
        owner("SELECT first_name || ' ' || region FROM contacts WHERE id = 2").trim(),
        "Giulia south"
    );
    assert_eq!(
        owner("SELECT contact_id || ' ' || stage FROM deals WHERE id = 2").trim(),
        "2 open"
    );
    assert_eq!(
        owner("SELECT notes FROM interactions WHERE id = 2").trim(),
        "complained about invoice"
    );
    // ON CONFLICT DO NOTHING stays allowed (it tells that a key exists: a documented covert channel).
    sales
        .batch_execute(
            "INSERT INTO interactions (contact_id, channel, notes) VALUES (1, 'call', 'new') ON CONFLICT DO NOTHING",
        )
        .await
        .expect("DO NOTHING");
}

#[tokio::test]
async fn the_views_fail_closed_when_a_direct_migration_removes_protection() {
    let crm = Crm::start();
    let owner = |sql: &str| crm.pg.psql(DB, &["-c", sql]).expect(sql);
    let reapply = || crm.reapply();
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(ids(&sales, "contacts").await, [1, 3]);
    assert_eq!(ids(&sales, "interactions").await, [1]);
    let breaks = [
        "DROP POLICY maschera_sales ON contacts",
        "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY",
        "ALTER POLICY maschera_sales ON contacts USING (true) WITH CHECK (true)",
        "DROP POLICY maschera_sales ON contacts; CREATE POLICY maschera_sales ON contacts AS RESTRICTIVE TO maschera_sales_owner USING (true)",
    ];
    for sql in breaks {
        owner(sql);
        let sales = crm.connect("sales", Some("north")).await;
        assert_eq!(
            ids(&sales, "contacts").await,
            Vec::<i64>::new(),
            "after {sql}"
        );
        assert_eq!(
            refused(
                &sales,
                "INSERT INTO contacts (first_name, last_name, email, phone, region) VALUES ('a', 'b', 'c@d.it', '+1', 'south')"
            )
            .await,
            "42501",
            "after {sql}"
        );
        assert_eq!(
            one(&sales, "WITH u AS (UPDATE contacts SET first_name = 'x' RETURNING 1) SELECT count(*)::text FROM u").await,
            "0",
            "after {sql}"
        );
        reapply();
        let sales = crm.connect("sales", Some("north")).await;
        assert_eq!(
            ids(&sales, "contacts").await,
            [1, 3],
            "re-applied after {sql}"
        );
    }
    // A view replaced by a direct migration loses its masks, but the filter stays on the table.
    owner(
        "CREATE OR REPLACE VIEW maschera_sales.contacts AS SELECT id, first_name, last_name, email, phone, birth_date, tax_code::text AS tax_code, street_address, city, region, created_at, last_activity_at FROM public.contacts",
    );
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(ids(&sales, "contacts").await, [1, 3]);
    // The interactions' filter reads contacts: with the contacts' policy gone it still holds on its own.
    owner("DROP POLICY maschera_sales ON interactions");
    let sales = crm.connect("sales", Some("north")).await;
    assert_eq!(ids(&sales, "interactions").await, Vec::<i64>::new());
}

#[tokio::test]
async fn every_filter_of_the_reference_policy_works_and_plans_per_row() {
    let crm = Crm::start();
    // Marketing's filters read consents, also on consents itself: no recursion error.
    let marketing = crm.connect("marketing", None).await;
    assert_eq!(ids(&marketing, "contacts").await, [1, 4]);
    assert_eq!(ids(&marketing, "consents").await, [1, 4]);
    assert_eq!(ids(&marketing, "interactions").await, [1, 3]);
    // Without its attribute a sales login sees no rows, and no error.
    let nowhere = crm.connect("sales", None).await;
    for table in ["contacts", "consents", "deals", "interactions", "tickets"] {
        assert_eq!(ids(&nowhere, table).await, Vec::<i64>::new(), "{table}");
    }
    let south = crm.connect("sales", Some("south")).await;
    assert_eq!(ids(&south, "contacts").await, [2]);
    assert_eq!(ids(&south, "deals").await, [2]);
    // Pages walk the primary key and probe one contact per row: no scan of the region.
    crm.pg
        .psql(
            DB,
            &["-c", "INSERT INTO contacts (id, first_name, last_name, email, phone, region) \
                     SELECT g, 'n', 'l', 'e' || g || '@example.it', '+' || g, (ARRAY['north','centre','south'])[g % 3 + 1] \
                     FROM generate_series(1000, 30000) g; \
                     INSERT INTO interactions (id, contact_id, channel) SELECT g, g, 'call' FROM generate_series(1000, 30000) g; \
                     INSERT INTO consents (id, contact_id, purpose, granted_at) SELECT g, g, 'marketing', now() FROM generate_series(1000, 30000, 2) g; \
                     ANALYZE"],
        )
        .expect("more rows");
    let sales = crm.connect("sales", Some("north")).await;
    for (client, sql) in [
        (
            &sales,
            "EXPLAIN SELECT * FROM contacts WHERE id >= 5000 ORDER BY id LIMIT 50",
        ),
        (
            &sales,
            "EXPLAIN SELECT * FROM interactions WHERE id >= 5000 ORDER BY id LIMIT 50",
        ),
        (
            &marketing,
            "EXPLAIN SELECT * FROM contacts WHERE id >= 5000 ORDER BY id LIMIT 50",
        ),
        (
            &sales,
            "EXPLAIN INSERT INTO interactions (contact_id, channel) VALUES (1, 'call')",
        ),
    ] {
        let plan = text(client, sql)
            .await
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n");
        // Catalog lookups of the guard aside (a few rows each), nothing scans a table or sorts.
        for scan in [
            "Seq Scan on contacts",
            "Seq Scan on interactions",
            "Seq Scan on consents",
            "Hash",
            "Sort",
        ] {
            assert!(!plan.contains(scan), "{sql}: {plan}");
        }
        if !sql.contains("INSERT") {
            assert!(
                plan.contains("Limit") && plan.contains("_pkey"),
                "{sql}: {plan}"
            );
        }
    }
}

#[tokio::test]
async fn writes_follow_the_matrix_in_the_database() {
    let crm = Crm::start();
    let sales = crm.connect("sales", Some("north")).await;
    let owner = |sql: &str| {
        crm.pg
            .psql(DB, &["-Atc", sql])
            .expect(sql)
            .trim()
            .to_string()
    };
    // An ORM's save: every column, masked ones written back as read; the stored values stay.
    let row = text(
        &sales,
        "SELECT tax_code || '|' || birth_date FROM contacts WHERE id = 1",
    )
    .await;
    assert_eq!(row, [Some("************205X|1980-01-01".into())]);
    sales
        .batch_execute(
            "UPDATE contacts SET first_name = 'Marco', tax_code = '************205X', birth_date = '1980-01-01' WHERE id = 1",
        )
        .await
        .expect("write-back of masked values");
    assert_eq!(
        owner(
            "SELECT first_name || ' ' || tax_code || ' ' || birth_date FROM contacts WHERE id = 1"
        ),
        "Marco RSSMRA80E17F205X 1980-05-17"
    );
    // Any other value in a masked column is refused, and names the column.
    let err = sales
        .batch_execute("UPDATE contacts SET tax_code = 'AAAAAAAAAAAAAAAA' WHERE id = 1")
        .await
        .expect_err("changed masked value");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "42501");
    assert!(db.message().contains("\"tax_code\""), "{}", db.message());
    // Inside the filter only: moving a row out, writing a new row outside, touching hidden rows.
    assert_eq!(
        refused(&sales, "UPDATE contacts SET region = 'south' WHERE id = 1").await,
        "42501"
    );
    assert_eq!(
        refused(&sales, "INSERT INTO contacts (first_name, last_name, email, phone, region) VALUES ('a', 'b', 'c@d.it', '+1', 'south')").await,
        "42501"
    );
    assert_eq!(
        refused(
            &sales,
            "INSERT INTO deals (contact_id, amount, stage) VALUES (2, 1, 'open')"
        )
        .await,
        "42501"
    );
    assert_eq!(
        one(
            &sales,
            "WITH d AS (DELETE FROM deals WHERE id = 2 RETURNING 1) SELECT count(*)::text FROM d"
        )
        .await,
        "0"
    );
    // An ORM's insert: every mapped column, NULL for the masked ones: the defaults are stored.
    let inserted = text(
        &sales,
        "INSERT INTO contacts (id, first_name, last_name, email, phone, birth_date, tax_code, street_address, city, region) \
         VALUES (DEFAULT, 'Nuovo', 'Cliente', 'nuovo@example.it', '+39 1', NULL, NULL, 'Via 1', 'Como', 'north') \
         RETURNING coalesce(tax_code, 'null') || '|' || (created_at IS NOT NULL)",
    )
    .await;
    assert_eq!(inserted, [Some("null|true".into())]);
    assert_eq!(
        refused(&sales, "INSERT INTO contacts (first_name, last_name, email, phone, tax_code, region) VALUES ('a', 'b', 'e@f.it', '+2', 'XXXXXXXXXXXXXXXX', 'north')").await,
        "42501"
    );
    assert_eq!(
        owner("SELECT count(*) FROM contacts WHERE email = 'e@f.it'"),
        "0"
    );
    // Interactions: insert with the table's defaults, delete inside the filter.
    sales
        .batch_execute(
            "INSERT INTO interactions (contact_id, channel, notes) VALUES (3, 'call', 'hello')",
        )
        .await
        .expect("insert interaction");
    assert_eq!(
        owner("SELECT count(*) FROM interactions WHERE contact_id = 3 AND occurred_at IS NOT NULL"),
        "1"
    );
    assert_eq!(
        one(&sales, "WITH d AS (DELETE FROM interactions WHERE contact_id = 3 RETURNING 1) SELECT count(*)::text FROM d").await,
        "1"
    );
    // Support writes consents without a filter or masks: its upsert passes (the matrix allows it).
    let support = crm.connect("support", None).await;
    support
        .batch_execute("INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (3, 2, 'newsletter', now()) ON CONFLICT (id) DO UPDATE SET withdrawn_at = now()")
        .await
        .expect("support upsert");
    assert_eq!(
        owner("SELECT withdrawn_at IS NOT NULL FROM consents WHERE id = 3"),
        "t"
    );
}

#[tokio::test]
async fn the_proxy_and_policy_check_refuse_a_role_whose_objects_are_incomplete() {
    use maschera_tests::crm_proxy::{CRM_DB, CRM_PSEUDONYM_KEY, apply_policy};
    let crm = maschera_tests::Fixture::crm(300)
        .start()
        .await
        .expect("CRM behind the proxy");
    let count = |uri: String| async move {
        let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT count(*) FROM contacts", &[])
            .await?;
        Ok::<i64, tokio_postgres::Error>(row.get(0))
    };
    let north = count(crm.uri("sam")).await.expect("sam before");
    assert!(north > 0);
    let check = || {
        std::process::Command::new(maschera_tests::maschera_bin())
            .args(["policy", "check"])
            .arg(&crm.applied.policy)
            .args(["--upstream", &crm.pg.uri(CRM_DB)])
            .output()
            .expect("policy check")
    };
    assert!(check().status.success());

    // A direct migration drops the sales policy on contacts.
    crm.pg
        .psql(CRM_DB, &["-c", "DROP POLICY maschera_sales ON contacts"])
        .expect("drop policy");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("policy role sales are incomplete")
            && stderr.contains("maschera_sales.contacts")
            && !stderr.contains("maschera_marketing"),
        "{stderr}"
    );
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log("policy reloaded", 1);
    let err = count(crm.uri("sam")).await.expect_err("sam is refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("maschera policy apply"),
        "{}",
        db.message()
    );
    assert!(count(crm.uri("dora")).await.expect("dora still served") > 0);

    // One apply makes the role whole again.
    apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("re-apply");
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log("policy reloaded", 2);
    assert_eq!(count(crm.uri("sam")).await.expect("sam after"), north);
    assert!(check().status.success());

    // An owner role given BYPASSRLS (a superuser's doing) is caught by the check too; apply resets it.
    crm.pg
        .psql(CRM_DB, &["-c", "ALTER ROLE maschera_sales_owner BYPASSRLS"])
        .expect("bypassrls");
    assert!(!check().status.success());
    apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("re-apply");
    assert!(check().status.success());

    // A login that cannot use plpgsql could not get its refusals back (they run as a DO block): the
    // check names the grant, and the proxy refuses the role rather than answer out of protocol.
    crm.pg
        .psql(
            CRM_DB,
            &["-c", "REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC"],
        )
        .expect("revoke plpgsql");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("GRANT USAGE ON LANGUAGE plpgsql TO \"maschera_sales\""),
        "{stderr}"
    );
    // Counted now: the re-apply above may have reloaded the proxy on its own (the file changed).
    let reloads = crm.proxy.log().matches("policy reloaded").count();
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log("policy reloaded", reloads + 1);
    let err = count(crm.uri("sam")).await.expect_err("sam is refused");
    assert_eq!(
        err.as_db_error().expect("an ErrorResponse").code().code(),
        "42501"
    );
    crm.pg
        .psql(CRM_DB, &["-c", "GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC"])
        .expect("grant plpgsql");
    assert!(check().status.success());
}

#[tokio::test]
async fn a_constraint_error_of_a_write_through_masks_withholds_the_stored_row() {
    let crm = Crm::start();
    // A policy without row filters (so no row-level security on contacts, under which PostgreSQL would
    // leave the DETAIL out itself): a clerk updates contacts it sees partly masked.
    let policy = crm.pg.dir().join("clerk.toml");
    std::fs::write(
        &policy,
        "[tables.contacts.columns]\nid = \"identifying\"\nfirst_name = \"identifying\"\nlast_name = \"identifying\"\nemail = \"contact\"\n\
         [roles.clerk.tables.contacts]\nshow = [\"id\", \"first_name\"]\n\
         columns = { last_name = \"mask.initial\", email = \"mask.email\" }\nwrites = [\"update\"]\n",
    )
    .expect("write policy");
    let out = crm.apply(&policy, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = crm.pg.psql(
        DB,
        &[
            "-Atc",
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.contacts'::regclass",
        ],
    );
    assert_eq!(
        owner.expect("owner").trim(),
        "f",
        "apply switched its row-level security off again"
    );
    let clerk = crm.connect("clerk", None).await;
    let err = clerk
        .batch_execute("UPDATE contacts SET first_name = NULL WHERE id = 1")
        .await
        .expect_err("NOT NULL");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "23502");
    let said = format!("{db:?}");
    for hidden in [
        "Rossi",
        "mario.rossi@example.it",
        "1234567",
        "RSSMRA80E17F205X",
    ] {
        assert!(!said.contains(hidden), "{said}");
    }
    assert!(said.contains("maschera withheld the row"), "{said}");
    // A write-back of the masked values with a change of a shown column works.
    clerk
        .batch_execute("UPDATE contacts SET first_name = 'Marione', last_name = 'R.', email = 'm***@example.it' WHERE id = 1")
        .await
        .expect("write-back");
    assert_eq!(
        one(
            &clerk,
            "SELECT first_name || ' ' || last_name FROM contacts WHERE id = 1"
        )
        .await,
        "Marione R."
    );
}
