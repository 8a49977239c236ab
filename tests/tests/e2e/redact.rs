//! Free text and keys that would undo the masks: the `redact` action evaluated by PostgreSQL on a
//! table of tricky inputs; support (tom) reading redacted notes and tickets and the analyst (ana)
//! reading child ids as table-scoped pseudonyms, through the proxy and straight as the role's login;
//! the correlation attack of the child ids; the write rules of redacted columns; and cascading deletes
//! (`policy check --upstream` warnings, `cascading_deletes = "refuse"` enforced by the proxy).

use maschera_tests::clients::{
    simple_column as column, simple_refusal as refusal, simple_rows as rows,
};
use maschera_tests::crm_proxy::CRM_DB;
use maschera_tests::{CrmProxy, Fixture, PgServer, examples_dir, run_maschera};
use std::collections::{BTreeMap, BTreeSet};

const KEY: &str = "redact-test-pseudonym-key-0123456789";
const CONTACTS: u64 = 400;

#[tokio::test]
async fn redaction_replaces_identifiers_inside_text_on_postgresql() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let client = pg.connect("postgres").await.expect("connect");
    let cases: &[(&str, &str)] = &[
        (
            "write to mario.rossi@example.it, or <giulia@example.it>.",
            "write to [email], or <[email]>.",
        ),
        ("(anna.neri+crm@mail.example.co.uk)", "([email])"),
        ("E-mail:LUCA_V@Example.COM;", "E-mail:[email];"),
        (
            "call +39 333 1234567 or 347-555-0001 or 0039 02 12345678",
            "call [phone] or [phone] or [phone]",
        ),
        (
            "tel:3331234567; fax (+39) 02/1234567.",
            "tel:[phone]; fax [phone].",
        ),
        (
            "IBAN IT60 X054 2811 1010 0000 0123 456 thanks",
            "IBAN [iban] thanks",
        ),
        ("iban: IT60X0542811101000000123456.", "iban: [iban]."),
        (
            "lower case it60x0542811101000000123456 and it60 x054 2811 1010 0000 0123 456",
            "lower case [iban] and [iban]",
        ),
        (
            "(333) 123-4567, +44 20 7946 0958, +1-202-555-0143, +39 (02) 1234 567",
            "[phone], [phone], [phone], [phone]",
        ),
        (
            "CF RSSMRA80E17F205X and lower rssmra80e17f205x ok",
            "CF [national id] and lower [national id] ok",
        ),
        (
            "SSN 123-45-6789, DNI 12345678Z, NIE X1234567L, NINO QQ 12 34 56 C",
            "SSN [national id], DNI [national id], NIE [national id], NINO [national id]",
        ),
        (
            "renewal on 2024-06-01 at 10:30, 01/06/2024, amount 1500.00 EUR",
            "renewal on 2024-06-01 at 10:30, 01/06/2024, amount 1500.00 EUR",
        ),
        (
            "Cliente interessato all'offerta, richiamare lunedì.",
            "Cliente interessato all'offerta, richiamare lunedì.",
        ),
        ("asked about pricing", "asked about pricing"),
        ("", ""),
    ];
    let expression = policy::redact::sql_expression("t");
    for standard_conforming_strings in ["on", "off"] {
        client
            .batch_execute(&format!(
                "SET standard_conforming_strings = {standard_conforming_strings}"
            ))
            .await
            .unwrap();
        for (input, expected) in cases {
            let row = client
                .query_one(
                    &format!("SELECT {expression} FROM (SELECT $1::text AS t) v"),
                    &[input],
                )
                .await
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            let got: String = row.get(0);
            assert_eq!(
                &got, expected,
                "{input} (standard_conforming_strings {standard_conforming_strings})"
            );
        }
    }
    let null: Option<String> = client
        .query_one(
            &format!("SELECT {expression} FROM (SELECT NULL::text AS t) v"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(null, None);
}

/// The reference CRM (generated, [`CONTACTS`] contacts) with the reference policy applied, optionally
/// edited by `edit`, and the proxy serving tom (support), ana (analyst) and sam (sales, north).
async fn start_redacted(edit: impl FnOnce(String) -> String + Send + 'static) -> CrmProxy {
    Fixture::crm(CONTACTS)
        .seed(7)
        .pseudonym_key(KEY)
        .users([
            ("tom", "support", &[][..]),
            ("ana", "analyst", &[]),
            ("sam", "sales", &[("region", "north")]),
        ])
        .policy(edit)
        .start()
        .await
        .expect("CRM behind the proxy")
}

#[tokio::test]
async fn support_reads_free_text_redacted_through_the_proxy_and_at_the_database() {
    let crm = start_redacted(|t| t).await;
    let owner = crm.owner().await;
    let emails = column(&owner, "SELECT email FROM contacts").await;
    let phones = column(&owner, "SELECT phone FROM contacts").await;
    let stored = column(
        &owner,
        "SELECT notes FROM interactions WHERE notes IS NOT NULL",
    )
    .await;
    assert!(
        stored.iter().any(|n| n.contains('@')) && stored.iter().any(|n| n.contains("+39 3")),
        "the generated notes hold e-mails and phones"
    );
    let tom = crm.through_proxy("tom").await;
    let login = crm.straight("support").await;
    for sql in [
        "SELECT id::text, notes FROM interactions ORDER BY id",
        "SELECT id::text, subject, body FROM tickets ORDER BY id",
    ] {
        let proxied = rows(&tom, sql).await;
        let direct = rows(&login, sql).await;
        assert_eq!(
            proxied, direct,
            "{sql}: the proxy and the database lock agree"
        );
        assert!(!proxied.is_empty());
        let text: Vec<&str> = proxied
            .iter()
            .flatten()
            .flatten()
            .map(String::as_str)
            .collect();
        for value in &text {
            assert!(!value.contains('@'), "{sql}: an e-mail in {value:?}");
            for secret in emails.iter().chain(&phones) {
                assert!(
                    !value.contains(secret.as_str()),
                    "{sql}: {secret} in {value:?}"
                );
            }
        }
        assert!(
            text.iter().any(|v| v.contains("[email]"))
                && text.iter().any(|v| v.contains("[phone]")),
            "{sql}: placeholders where the text had e-mails and phones"
        );
    }
    // The rest of the text stays: a plain note reads as stored.
    let plain = column(
        &tom,
        "SELECT notes FROM interactions WHERE notes = 'Requested a demo for the whole team.' LIMIT 1",
    )
    .await;
    assert_eq!(plain, ["Requested a demo for the whole team."]);

    // Writes: changing a redacted column is refused through the proxy, naming the column (the
    // write-back's own message); written back unchanged it passes; other columns stay writable.
    let (code, message) = refusal(
        &tom,
        "UPDATE tickets SET body = 'Hello' WHERE id = (SELECT min(id) FROM tickets)",
    )
    .await;
    assert_eq!(code, "42501");
    assert!(
        message.contains("column \"body\" of \"tickets\" is not writable"),
        "{message}"
    );
    tom.execute(
        "UPDATE tickets SET subject = subject, status = 'closed' WHERE id = (SELECT min(id) FROM tickets)",
        &[],
    )
    .await
    .expect("the redacted subject written back unchanged");
    let updated = tom
        .execute(
            "UPDATE tickets SET status = 'closed' WHERE id = (SELECT min(id) FROM tickets)",
            &[],
        )
        .await
        .expect("status is support's to change");
    assert!(updated <= 1);
    // A new row may carry text in a redacted column: stored as written, read back redacted, through
    // the proxy and straight at the database.
    for (client, text) in [
        (&tom, "through the proxy: call back on +39 333 0000000"),
        (&login, "at the database: write to new.customer@example.it"),
    ] {
        let returned = column(
            client,
            &format!(
                "INSERT INTO interactions (contact_id, channel, notes) VALUES (1, 'call', '{text}') RETURNING notes"
            ),
        )
        .await;
        assert_eq!(returned.len(), 1);
        assert!(
            returned[0].ends_with("[phone]") || returned[0].ends_with("[email]"),
            "{returned:?}"
        );
        assert_eq!(
            column(
                &owner,
                &format!("SELECT count(*) FROM interactions WHERE notes = '{text}'")
            )
            .await,
            ["1"],
            "stored as written"
        );
    }
    tom.execute(
        "INSERT INTO interactions (contact_id, channel) VALUES (1, 'call')",
        &[],
    )
    .await
    .expect("support inserts an interaction without notes");
    let (code, message) = refusal(
        &login,
        "UPDATE interactions SET notes = 'x' WHERE contact_id = 1",
    )
    .await;
    assert!(
        code == "0A000" || code == "42501",
        "no update of a redacted column at the database: {code} {message}"
    );

    // At the database the write path follows the matrix's write-back rule: a ticket saved with its
    // redacted text unchanged (as an ORM does) keeps the stored text; a changed text is refused,
    // naming the column.
    let stored = |sql: &'static str| column(&owner, sql);
    let before = stored(
        "SELECT concat(subject, '|', body) FROM tickets WHERE id = (SELECT min(id) FROM tickets)",
    )
    .await;
    let saved = login
        .execute(
            "UPDATE tickets SET subject = subject, body = body, status = 'pending' WHERE id = (SELECT min(id) FROM tickets)",
            &[],
        )
        .await
        .expect("write-back of the redacted text unchanged");
    assert_eq!(saved, 1);
    assert_eq!(
        stored("SELECT concat(subject, '|', body, '|', status) FROM tickets WHERE id = (SELECT min(id) FROM tickets)").await,
        [format!("{}|pending", before[0])],
        "the stored text is kept, the shown column changed"
    );
    let (code, message) = refusal(
        &login,
        "UPDATE tickets SET body = 'replaced text' WHERE id = (SELECT min(id) FROM tickets)",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("\"body\""), "{message}");
    assert_eq!(
        stored("SELECT concat(subject, '|', body) FROM tickets WHERE id = (SELECT min(id) FROM tickets)").await,
        before,
        "a changed redacted text is not stored"
    );
}

fn is_pseudonym(value: &str) -> bool {
    value.len() == 64
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[tokio::test]
async fn the_analyst_sees_child_ids_as_table_pseudonyms_that_undo_nothing() {
    let crm = start_redacted(|t| t).await;
    let owner = crm.owner().await;
    let ana = crm.through_proxy("ana").await;
    let login = crm.straight("analyst").await;
    let contact_pseudonyms: BTreeSet<String> = column(&ana, "SELECT id FROM contacts")
        .await
        .into_iter()
        .collect();
    assert_eq!(contact_pseudonyms.len() as u64, CONTACTS);
    let mut child_ids = BTreeSet::new();
    for table in ["consents", "deals", "interactions", "tickets"] {
        let sql = format!("SELECT id, contact_id FROM {table} ORDER BY id");
        let proxied = rows(&ana, &sql).await;
        assert_eq!(
            proxied,
            rows(&login, &sql).await,
            "{table}: proxy and database agree"
        );
        for row in &proxied {
            let (id, contact) = (row[0].as_deref().unwrap(), row[1].as_deref().unwrap());
            assert!(is_pseudonym(id), "{table}.id {id}");
            assert!(
                !contact_pseudonyms.contains(id),
                "{table}.id equals a contact pseudonym"
            );
            assert!(
                contact_pseudonyms.contains(contact),
                "{table}.contact_id joins to contacts"
            );
            assert!(
                child_ids.insert(id.to_string()),
                "{table}.id {id} repeats in another table"
            );
        }
    }
    // Joins on the contact pseudonym still work.
    let joined = column(
        &ana,
        "SELECT count(*) FROM deals d JOIN contacts c ON c.id = d.contact_id",
    )
    .await;
    assert_eq!(joined, column(&owner, "SELECT count(*) FROM deals").await);

    // The attack of issue 19, item 9: order the contacts by their first child id and read them as the
    // contacts' own order. With clear serial ids (what the owner sees) it maps pseudonyms to ids;
    // with table pseudonyms it does not.
    let truth: BTreeMap<String, i64> = rows(
        &owner,
        &format!(
            "SELECT encode(sha256(convert_to('{KEY}' || id::text, 'UTF8')), 'hex'), id FROM contacts"
        ),
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].as_deref().unwrap().parse().unwrap()))
    .collect();
    let attack = "SELECT contact_id, min(id) FROM deals GROUP BY 1 ORDER BY 2";
    let exact_guesses = |order: Vec<i64>| {
        let mut sorted = order.clone();
        sorted.sort();
        order.iter().zip(&sorted).filter(|(a, b)| a == b).count()
    };
    let with_table_pseudonyms: Vec<i64> = column(&ana, attack)
        .await
        .iter()
        .map(|p| truth[p])
        .collect();
    let with_clear_ids: Vec<i64> = column(
        &owner,
        "SELECT contact_id FROM deals GROUP BY 1 ORDER BY min(id)",
    )
    .await
    .iter()
    .map(|id| id.parse().unwrap())
    .collect();
    let (before, after) = (
        exact_guesses(with_clear_ids),
        exact_guesses(with_table_pseudonyms.clone()),
    );
    eprintln!(
        "correlation attack on {} contacts with deals: {before} exact with clear ids, {after} with table pseudonyms",
        with_table_pseudonyms.len()
    );
    assert!(
        before * 2 > with_table_pseudonyms.len(),
        "the attack works on clear ids: {before}"
    );
    assert!(
        after * 10 < with_table_pseudonyms.len(),
        "and not on table pseudonyms: {after}"
    );
}

#[tokio::test]
async fn cascading_deletes_are_warned_about_and_refused_when_the_policy_says_so() {
    let crm = start_redacted(|t| {
        t.replace(
            "[settings]\n",
            "[settings]\ncascading_deletes = \"refuse\"\n",
        )
    })
    .await;
    // policy check --upstream on the reference policy (cascades allowed) warns, naming the constraint.
    let check = |policy: &std::path::Path| {
        let out = run_maschera([
            "policy".as_ref(),
            "check".as_ref(),
            policy.as_os_str(),
            "--upstream".as_ref(),
            crm.pg.uri(CRM_DB).as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let warnings = check(&examples_dir().join("crm/policy.toml"));
    assert!(
        warnings.contains(
            "role `sales` may delete rows of `public.contacts`, and constraint `health_records_contact_id_fkey`"
        ) && warnings.contains("which the role may not see"),
        "{warnings}"
    );
    assert!(
        !warnings.contains("in clear beside the pseudonymised"),
        "the reference policy gives the analyst no clear serial key: {warnings}"
    );
    let weakened = crm.pg.dir().join("weakened.toml");
    std::fs::write(
        &weakened,
        std::fs::read_to_string(examples_dir().join("crm/policy.toml"))
            .unwrap()
            .replace(
                "columns = { id = \"pseudonym.table\", contact_id = \"pseudonym\" }\n\n[roles.analyst.tables.deals]",
                "columns = { contact_id = \"pseudonym\" }\n\n[roles.analyst.tables.deals]",
            ),
    )
    .unwrap();
    let warnings = check(&weakened);
    assert!(
        warnings.contains("role `analyst` sees `public.consents.id` in clear beside the pseudonymised `contact_id`"),
        "{warnings}"
    );
    // The refusing policy: no warning about deletes, and the proxy refuses them.
    assert!(!check(&crm.applied.policy).contains("may delete rows"));
    let sam = crm.through_proxy("sam").await;
    let owner = crm.owner().await;
    let north: String = column(
        &owner,
        "SELECT min(id) FROM contacts WHERE region = 'north'",
    )
    .await
    .remove(0);
    let (code, message) = refusal(&sam, &format!("DELETE FROM contacts WHERE id = {north}")).await;
    assert_eq!(code, "42501");
    assert!(
        message.contains("may not delete from it")
            && (message.contains("into table public.health_records")
                || message.contains("into table public.judicial_records")),
        "names the hidden table: {message}"
    );
    assert_eq!(
        column(
            &owner,
            &format!("SELECT count(*) FROM contacts WHERE id = {north}")
        )
        .await,
        ["1"]
    );
    // A delete that cascades nowhere is still allowed.
    sam.execute(
        &format!("DELETE FROM deals WHERE contact_id = {north}"),
        &[],
    )
    .await
    .expect("deals cascade nowhere");
}

#[tokio::test]
async fn an_insert_setting_a_redacted_column_stays_inside_the_row_filter() {
    // Sales reads its interactions' notes redacted in this variant of the reference policy.
    let crm = start_redacted(|t| {
        t.replace(
            "[roles.sales.tables.interactions]\nshow = [\"contact_id\", \"notes\"]",
            "[roles.sales.tables.interactions]\nshow = [\"contact_id\"]\ncolumns = { notes = \"redact\" }",
        )
    })
    .await;
    let owner = crm.owner().await;
    let contact_in = |region: &'static str| {
        let owner = &owner;
        async move {
            column(
                owner,
                &format!("SELECT min(id) FROM contacts WHERE region = '{region}'"),
            )
            .await
            .remove(0)
        }
    };
    let (north, south) = (contact_in("north").await, contact_in("south").await);
    let sam = crm.through_proxy("sam").await;
    let returned = column(
        &sam,
        &format!(
            "INSERT INTO interactions (contact_id, channel, notes) VALUES ({north}, 'call', 'mail a@b.it') RETURNING notes"
        ),
    )
    .await;
    assert_eq!(returned, ["mail [email]"]);
    let (code, message) = refusal(
        &sam,
        &format!(
            "INSERT INTO interactions (contact_id, channel, notes) VALUES ({south}, 'call', 'secret-note-4711')"
        ),
    )
    .await;
    // Refused by the table's row-level security (the policy's WITH CHECK) under the view's trigger;
    // the proxy withholds the message of an error raised inside database code.
    assert_eq!(code, "42501", "{message}");
    assert!(!message.contains("secret-note-4711"), "{message}");
    assert_eq!(
        column(
            &owner,
            "SELECT count(*) FROM interactions WHERE notes IN ('mail a@b.it', 'secret-note-4711')"
        )
        .await,
        ["1"],
        "only the row inside the filter is stored"
    );
}
