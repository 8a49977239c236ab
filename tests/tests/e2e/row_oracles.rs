//! Statements and answers that could read, test or move a row outside a restricted role's row
//! filter, against the reference CRM through the real proxy (issue 19, items 1, 2, 5 and 6): upserts
//! in every form are refused in both protocols and change nothing; PostgreSQL's errors (23502,
//! 23503, 23505, 23514, 44000) keep their SQLSTATE but show no hidden value and no hidden object
//! name; LISTEN, UNLISTEN, NOTIFY and pg_notify reach only the channels the policy allows.
//! Not for: the rewriter's decisions one by one (policy's unit tests) or the database lock.

use maschera_tests::crm_proxy::CRM_DB;
use maschera_tests::{CrmProxy, Fixture};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

async fn connect(uri: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"));
    tokio::spawn(connection);
    client
}

/// Every value of `sql` run directly as the superuser, as text.
async fn admin_values(crm: &CrmProxy, sql: &str) -> Vec<String> {
    let admin = crm.pg.connect(CRM_DB).await.expect("admin connection");
    let mut out = Vec::new();
    for message in admin.simple_query(sql).await.expect(sql) {
        if let SimpleQueryMessage::Row(row) = message {
            out.extend((0..row.len()).filter_map(|i| row.get(i).map(str::to_owned)));
        }
    }
    out
}

async fn admin_value(crm: &CrmProxy, sql: &str) -> String {
    admin_values(crm, sql)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// The error of `sql` (simple or extended protocol): SQLSTATE and every field as the client got it.
async fn error_of(client: &Client, extended: bool, sql: &str) -> (String, String) {
    let result = if extended {
        client.execute(sql, &[]).await.map(|_| ())
    } else {
        client.batch_execute(sql).await
    };
    let err = result.expect_err(sql);
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: not a database error: {err:?}"));
    (db.code().code().to_owned(), format!("{db:?}"))
}

/// What psql prints on its standard error (notices and errors) running `args` through the proxy as
/// `user`.
fn psql_stderr(crm: &CrmProxy, user: &str, args: &[&str]) -> String {
    maschera_tests::psql(&crm.uri(user), args).stderr
}

#[track_caller]
fn assert_shows_none(context: &str, shown: &str, hidden: &[String]) {
    for value in hidden {
        assert!(
            !shown.contains(value.as_str()),
            "{context}: hidden {value:?} appears in {shown}"
        );
    }
}

#[tokio::test]
async fn upserts_and_other_shapes_cannot_read_test_or_move_rows_outside_the_filter() {
    let crm = Fixture::crm(200)
        .start()
        .await
        .expect("start the CRM proxy");
    let south = admin_value(
        &crm,
        "SELECT id FROM contacts WHERE region = 'south' ORDER BY id LIMIT 1",
    )
    .await;
    let south_deal = admin_value(
        &crm,
        "SELECT d.id FROM deals d JOIN contacts c ON c.id = d.contact_id WHERE c.region = 'south' ORDER BY d.id LIMIT 1",
    )
    .await;
    let south_note = admin_value(
        &crm,
        "SELECT i.id FROM interactions i JOIN contacts c ON c.id = i.contact_id WHERE c.region = 'south' ORDER BY i.id LIMIT 1",
    )
    .await;
    let own = admin_value(
        &crm,
        "SELECT id FROM contacts WHERE region = 'north' ORDER BY id LIMIT 1",
    )
    .await;
    let snapshot = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM contacts t; \
                    SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM deals t; \
                    SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM interactions t";
    let before = admin_values(&crm, snapshot).await;
    let hidden = admin_values(
        &crm,
        &format!("SELECT first_name, last_name, email, phone, street_address FROM contacts WHERE id = {south}"),
    )
    .await;
    let values =
        format!("({south}, 'x', 'x', 'x-upsert@x.invalid', '+39 000 0000000', 'x', 'north')");
    let insert = format!(
        "INSERT INTO contacts (id, first_name, last_name, email, phone, street_address, region) VALUES {values}"
    );
    let variants = [
        (
            "public.contacts",
            format!("{insert} ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name"),
        ),
        (
            "public.contacts",
            format!("{insert} ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name"),
        ),
        (
            "public.contacts",
            format!(
                "{insert} ON CONFLICT ON CONSTRAINT contacts_pkey DO UPDATE SET first_name = NULL"
            ),
        ),
        (
            "public.contacts",
            format!("{insert} ON CONFLICT (id) DO UPDATE SET region = 'west'"),
        ),
        // A leaky expression: the cast error would print the hidden e-mail.
        (
            "public.contacts",
            format!(
                "{insert} ON CONFLICT (id) DO UPDATE SET first_name = (contacts.email::int)::text"
            ),
        ),
        (
            "public.contacts",
            format!("{insert} ON CONFLICT (id) DO UPDATE SET region = 'north' RETURNING *"),
        ),
        (
            "public.contacts",
            format!(
                "{insert} ON CONFLICT (id) DO UPDATE SET first_name = 'y' WHERE contacts.email LIKE '%'"
            ),
        ),
        (
            "public.contacts",
            format!(
                "WITH up AS ({insert} ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name RETURNING id) SELECT * FROM up"
            ),
        ),
        (
            "public.deals",
            format!(
                "INSERT INTO deals (id, contact_id, amount, stage) VALUES ({south_deal}, {own}, 1, 'new') ON CONFLICT (id) DO UPDATE SET contact_id = excluded.contact_id"
            ),
        ),
        (
            "public.interactions",
            format!(
                "INSERT INTO interactions (id, contact_id, channel, notes) VALUES ({south_note}, {own}, 'call', 'x') ON CONFLICT (id) DO UPDATE SET notes = substr(interactions.notes, 1, 60) || 'x'"
            ),
        ),
    ];
    let sam = connect(&crm.uri("sam")).await;
    for extended in [false, true] {
        for (table, sql) in &variants {
            let (code, shown) = error_of(&sam, extended, sql).await;
            assert_eq!(code, "42501", "{sql}: {shown}");
            assert!(
                shown.contains(table) && shown.contains("ON CONFLICT DO UPDATE"),
                "{sql}: {shown}"
            );
            assert_shows_none(sql, &shown, &hidden);
        }
    }
    // PREPARE and EXECUTE in the simple protocol.
    let (code, shown) = error_of(
        &sam,
        false,
        &format!(
            "PREPARE up AS {insert} ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name"
        ),
    )
    .await;
    assert_eq!(code, "42501", "{shown}");
    // The extended protocol with parameters.
    let err = sam
        .execute(
            "INSERT INTO contacts (id, first_name, email, region) VALUES ($1, 'x', 'p-upsert@x.invalid', 'north') \
             ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name",
            &[&south.parse::<i64>().unwrap()],
        )
        .await
        .expect_err("parameterised upsert refused");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    // DO NOTHING passes the proxy, and the hidden row is left alone with nothing shown of it: the
    // proxy tests the key on the role's view (which cannot see the row), so the trigger's insert
    // meets the key as a unique violation (23505, its DETAIL withheld): the key exists, nothing more.
    match sam
        .execute(&format!("{insert} ON CONFLICT (id) DO NOTHING"), &[])
        .await
    {
        Ok(done) => assert_eq!(done, 0),
        Err(err) => {
            assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err:?}");
            let db = err.as_db_error().expect("db error");
            assert!(db.detail().is_none_or(|d| d.contains("withheld")), "{db:?}");
        }
    }
    // The rest of the class: statements that read, test, lock or change rows through the views
    // reach none outside the filter (0 rows, nothing changed), in both protocols; MERGE, COPY FROM
    // and triggers are refused.
    let outside = [
        format!(
            "UPDATE deals SET stage = 'lost' FROM contacts WHERE contacts.id = deals.contact_id AND contacts.id = {south}"
        ),
        format!("UPDATE deals SET stage = 'lost' WHERE id = {south_deal} RETURNING *"),
        format!(
            "DELETE FROM interactions USING contacts WHERE interactions.contact_id = contacts.id AND contacts.id = {south}"
        ),
        format!("DELETE FROM interactions WHERE id = {south_note} RETURNING notes"),
        format!("SELECT id FROM contacts WHERE id = {south} FOR UPDATE"),
        format!("SELECT id FROM contacts WHERE id = {south} FOR SHARE"),
        format!(
            "INSERT INTO deals (contact_id, amount, stage) SELECT id, 1, 'x' FROM contacts WHERE id = {south} RETURNING *"
        ),
        format!(
            "WITH m AS (UPDATE contacts SET region = 'north' WHERE id = {south} RETURNING *) SELECT * FROM m"
        ),
        format!(
            "WITH g AS (DELETE FROM deals WHERE id = {south_deal} RETURNING *) SELECT * FROM g"
        ),
        format!(
            "UPDATE contacts SET first_name = first_name WHERE id = {south} AND email LIKE '%' RETURNING email"
        ),
    ];
    for extended in [false, true] {
        for sql in &outside {
            let shown = if extended {
                let rows = sam
                    .query(sql.as_str(), &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                assert!(rows.is_empty(), "{sql}: {} rows", rows.len());
                String::new()
            } else {
                let messages = sam
                    .simple_query(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                for message in &messages {
                    match message {
                        SimpleQueryMessage::Row(_) => panic!("{sql}: a row came back"),
                        SimpleQueryMessage::CommandComplete(n) => assert_eq!(*n, 0, "{sql}"),
                        _ => {}
                    }
                }
                format!("{messages:?}")
            };
            assert_shows_none(sql, &shown, &hidden);
        }
    }
    for (sql, codes) in [
        (
            format!(
                "MERGE INTO contacts c USING (SELECT {south} AS id) s ON c.id = s.id WHEN MATCHED THEN UPDATE SET first_name = 'x'"
            ),
            ["0A000", "42501"],
        ),
        ("COPY contacts FROM STDIN".to_owned(), ["0A000", "42501"]),
        (
            "CREATE TRIGGER t BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION f()"
                .to_owned(),
            ["42501", "42501"],
        ),
    ] {
        let (code, shown) = error_of(&sam, false, &sql).await;
        assert!(codes.contains(&code.as_str()), "{sql}: {code} {shown}");
    }
    assert_eq!(
        admin_values(&crm, snapshot).await,
        before,
        "no statement changed a row outside the filter"
    );
    // The session goes on.
    let rows = sam
        .query("SELECT count(*) FROM contacts", &[])
        .await
        .unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);
}

/// Runs `sql` as sam in both protocols (each in a transaction rolled back after) and checks the
/// error's SQLSTATE and that it shows none of `hidden`; returns what the extended protocol showed.
async fn scrubbed(
    sam: &Client,
    setup: &str,
    sql: &str,
    codes: &[&str],
    hidden: &[String],
) -> String {
    let mut last = String::new();
    for extended in [false, true] {
        sam.batch_execute(&format!("BEGIN; {setup}"))
            .await
            .unwrap_or_else(|e| panic!("{setup}: {e:?}"));
        let (code, shown) = error_of(sam, extended, sql).await;
        sam.batch_execute("ROLLBACK").await.unwrap();
        assert!(codes.contains(&code.as_str()), "{sql}: {code} {shown}");
        assert_shows_none(sql, &shown, hidden);
        assert!(!shown.contains("Failing row"), "{sql}: {shown}");
        last = shown;
    }
    last
}

#[tokio::test]
async fn errors_keep_their_sqlstate_and_show_no_hidden_value_or_name() {
    let crm = Fixture::crm(200)
        .start()
        .await
        .expect("start the CRM proxy");
    // A north contact with a health record, whose other children the test removes upstream so that
    // the only foreign key left to break on a change of its id is the hidden one (item 5).
    let target = admin_value(
        &crm,
        "SELECT c.id FROM contacts c JOIN health_records h ON h.contact_id = c.id \
         WHERE c.region = 'north' ORDER BY c.id LIMIT 1",
    )
    .await;
    admin_values(
        &crm,
        &format!(
            "DELETE FROM consents WHERE contact_id = {target}; DELETE FROM tickets WHERE contact_id = {target}; \
             DELETE FROM judicial_records WHERE contact_id = {target}"
        ),
    )
    .await;
    let other = admin_value(
        &crm,
        &format!("SELECT email FROM contacts WHERE region = 'north' AND id <> {target} ORDER BY id LIMIT 1"),
    )
    .await;
    // What sales sees masked (tax code, birth date) or not at all (health records).
    let mut hidden = admin_values(
        &crm,
        &format!(
            "SELECT tax_code, birth_date::text FROM contacts WHERE id = {target}; \
             SELECT condition, notes FROM health_records WHERE contact_id = {target}"
        ),
    )
    .await;
    hidden.push("health_records".into());
    hidden.push("health".into());

    // The control: the unrestricted dpo gets PostgreSQL's errors as they are, hidden names included.
    let dora = connect(&crm.uri("dora")).await;
    dora.batch_execute(&format!(
        "BEGIN; DELETE FROM deals WHERE contact_id = {target}; DELETE FROM interactions WHERE contact_id = {target}"
    ))
    .await
    .unwrap();
    let (code, shown) = error_of(
        &dora,
        false,
        &format!("UPDATE contacts SET id = 9000000 + id WHERE id = {target}"),
    )
    .await;
    dora.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(code, "23503");
    assert!(shown.contains("health_records_contact_id_fkey"), "{shown}");
    let (_, shown) = error_of(
        &dora,
        false,
        &format!("UPDATE contacts SET region = 'west' WHERE id = {target}"),
    )
    .await;
    assert!(shown.contains("Failing row"), "{shown}");

    let sam = connect(&crm.uri("sam")).await;
    // The change of a referenced key is refused before it meets the foreign key of the hidden
    // health_records (whose 23503 would tell that the contact has one: attack round 5).
    let shown = scrubbed(
        &sam,
        &format!(
            "DELETE FROM deals WHERE contact_id = {target}; DELETE FROM interactions WHERE contact_id = {target}"
        ),
        &format!("UPDATE contacts SET id = 9000000 + id WHERE id = {target}"),
        &["42501"],
        &hidden,
    )
    .await;
    assert!(
        shown.contains("a key that other tables refer to"),
        "{shown}"
    );
    // Each (statement, the SQLSTATEs it may fail with, what must still be named): the failing row
    // of 23502, 23514 and 44000 would show the stored tax code and birth date; 23505's DETAIL the
    // key; a visible constraint stays named. 44000 becomes 42501 once the row filter is a
    // row-level security policy, which PostgreSQL checks before the table's constraints: a region
    // outside the filter (`west`) is refused by the row filter before its check constraint.
    let cases: [(String, &[&str], &[&str]); 4] = [
        (
            format!("UPDATE contacts SET first_name = NULL WHERE id = {target}"),
            &["23502"],
            &["withheld by Maschera"],
        ),
        (
            format!("UPDATE contacts SET region = 'west' WHERE id = {target}"),
            &["23514", "42501"],
            &[],
        ),
        (
            format!("UPDATE contacts SET region = 'south' WHERE id = {target}"),
            &["44000", "42501"],
            &[],
        ),
        (
            format!("UPDATE contacts SET email = '{other}' WHERE id = {target}"),
            &["23505"],
            &["contacts_email_key"],
        ),
    ];
    for (sql, codes, named) in &cases {
        let shown = scrubbed(&sam, "", sql, codes, &hidden).await;
        for name in named.iter() {
            assert!(shown.contains(name), "{sql}: {name} not in {shown}");
        }
        assert!(!shown.contains("Key ("), "{sql}: {shown}");
    }
    // psql as sam: a warning (NoticeResponse) about the caller's own session passes as it is; a
    // constraint error (raised under the view's write trigger) arrives without the failing row.
    let stderr = psql_stderr(
        &crm,
        "sam",
        &[
            "-c",
            "COMMIT",
            "-c",
            &format!("UPDATE contacts SET first_name = NULL WHERE id = {target}"),
        ],
    );
    assert!(
        stderr.contains("WARNING:  there is no transaction in progress"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR:  null value violates a not-null constraint")
            && !stderr.contains("Failing row"),
        "{stderr}"
    );
    assert_shows_none("psql", &stderr, &hidden);

    // Database code: a trigger (installed by the owner) that prints the stored tax code in a NOTICE,
    // and raises P0001 with it. sam's UPDATE fires both; what sam gets keeps the SQLSTATE and the
    // severity, and withholds the message and the context.
    admin_values(
        &crm,
        "CREATE FUNCTION leaky_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE NOTICE 'stored tax code %', OLD.tax_code; \
           IF NEW.first_name = 'boom' THEN RAISE EXCEPTION 'refused for %', OLD.tax_code; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER leaky BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION leaky_trigger()",
    )
    .await;
    let stderr = psql_stderr(
        &crm,
        "sam",
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            &format!("UPDATE contacts SET first_name = first_name WHERE id = {target}"),
            "-c",
            &format!("UPDATE contacts SET first_name = 'boom' WHERE id = {target}"),
        ],
    );
    assert!(
        stderr.contains(
            "NOTICE:  00000: error raised by database code (message withheld by Maschera"
        ) && stderr
            .contains("ERROR:  P0001: error raised by database code (message withheld by Maschera")
            && stderr.contains("CONTEXT:  CONTEXT withheld by Maschera"),
        "{stderr}"
    );
    assert_shows_none("psql with a leaky trigger", &stderr, &hidden);
    // The session goes on.
    let rows = sam.query("SELECT 1::int", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 1);
}

/// A connection whose notifications arrive on the receiver as (channel, payload).
async fn listener(uri: &str) -> (Client, mpsc::UnboundedReceiver<(String, String)>) {
    let (client, mut connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"));
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) =
            futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
        {
            if let AsyncMessage::Notification(n) = message {
                let _ = sender.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    (client, receiver)
}

/// The notifications that arrive within a short while (a round trip makes sure pending ones came).
async fn arrived(
    client: &Client,
    receiver: &mut mpsc::UnboundedReceiver<(String, String)>,
) -> Vec<(String, String)> {
    client.batch_execute("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    while let Ok(n) = receiver.try_recv() {
        out.push(n);
    }
    out
}

#[tokio::test]
async fn listen_and_notify_reach_only_the_channels_the_policy_allows() {
    let crm = Fixture::crm(20).start().await.expect("start the CRM proxy");
    let (dora, mut dora_hears) = listener(&crm.uri("dora")).await;
    let (sam, mut sam_hears) = listener(&crm.uri("sam")).await;
    // None by default: LISTEN, UNLISTEN, NOTIFY and pg_notify are refused naming the channel.
    for extended in [false, true] {
        for sql in [
            "LISTEN crm_events",
            "UNLISTEN crm_events",
            "NOTIFY crm_events, 'from sam'",
            "SELECT pg_notify('crm_events', 'from sam')",
        ] {
            let (code, shown) = error_of(&sam, extended, sql).await;
            assert_eq!(code, "42501", "{sql}: {shown}");
            assert!(
                shown.contains("crm_events") || shown.contains("channel"),
                "{sql}: {shown}"
            );
        }
    }
    sam.batch_execute("UNLISTEN *")
        .await
        .expect("UNLISTEN * passes");
    // What an unrestricted session notifies does not reach sam.
    dora.batch_execute("LISTEN crm_events").await.unwrap();
    dora.batch_execute("NOTIFY crm_events, 'mario.rossi@example.it'")
        .await
        .unwrap();
    assert_eq!(
        arrived(&dora, &mut dora_hears).await,
        [("crm_events".to_owned(), "mario.rossi@example.it".to_owned())],
        "the unrestricted dpo listens and notifies as it likes"
    );
    assert!(arrived(&sam, &mut sam_hears).await.is_empty());

    // The policy gives sales one channel: sam may use it, and only it.
    let text = std::fs::read_to_string(&crm.applied.policy).unwrap();
    let edited = text.replace(
        "[roles.sales]\n",
        "[roles.sales]\nchannels = [\"crm_events\"]\n",
    );
    assert_ne!(edited, text, "the sales role of the reference policy moved");
    std::fs::write(&crm.applied.policy, edited).unwrap();
    crm.proxy.signal(libc::SIGHUP);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !crm.proxy.log().contains("policy reloaded") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload: {}",
            crm.proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sam, mut sam_hears) = listener(&crm.uri("sam")).await;
    sam.batch_execute("LISTEN crm_events")
        .await
        .expect("allowed channel");
    sam.execute("LISTEN Crm_Events", &[])
        .await
        .expect("folded like PostgreSQL");
    let (code, _) = error_of(&sam, false, "LISTEN other_events").await;
    assert_eq!(code, "42501");
    dora.batch_execute("NOTIFY crm_events, 'deal 7 won'; NOTIFY other_events, 'secret'")
        .await
        .unwrap();
    assert_eq!(
        arrived(&sam, &mut sam_hears).await,
        [("crm_events".to_owned(), "deal 7 won".to_owned())]
    );
    sam.execute("SELECT pg_notify('crm_events', 'from sam')", &[])
        .await
        .expect("pg_notify on the allowed channel");
    let heard = arrived(&dora, &mut dora_hears).await;
    assert!(
        heard.contains(&("crm_events".to_owned(), "from sam".to_owned())),
        "{heard:?}"
    );
    let (code, _) = error_of(&sam, true, "SELECT pg_notify('other_events', 'x')").await;
    assert_eq!(code, "42501");
}
