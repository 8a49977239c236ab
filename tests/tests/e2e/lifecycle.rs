//! The data lifecycle commands run by the real binary against a real PostgreSQL holding the reference
//! CRM: the register of processing (`policy register`), the anonymised dump (`dump`), erasure on request
//! (`forget`) and retention (`retention run`, and on a schedule inside `maschera serve`).

use maschera_tests::crm::load_crm;
use maschera_tests::{
    PgServer, Proxy, ProxyOptions, examples_dir, maschera_bin, run_maschera_with,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const DB: &str = "crm";

const ROLES: &[&str] = &["analyst", "dpo", "marketing", "sales", "support"];

fn maschera(args: &[&str]) -> Output {
    maschera_with_env(args, &[])
}

fn maschera_with_env(args: &[&str], env: &[(String, String)]) -> Output {
    let mut vars = vec![("MASCHERA_PSEUDONYM_KEY", "lifecycle-test-key-0123456789")];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = run_maschera_with(args, &vars);
    assert!(
        out.status.success(),
        "maschera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn reference_policy() -> String {
    examples_dir().join("crm/policy.toml").display().to_string()
}

/// Every category the reference policy uses: all but `secret` (the reference CRM stores no password
/// hashes or tokens).
fn all_categories() -> BTreeSet<String> {
    policy::access::Category::all()
        .iter()
        .map(|c| c.as_str().to_string())
        .filter(|c| c != "secret")
        .collect()
}

#[test]
fn register_markdown_lists_every_role_and_category() {
    let out = maschera(&["policy", "register", &reference_policy(), "--format", "md"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let headings: BTreeSet<&str> = text.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    assert_eq!(headings, ROLES.iter().copied().collect());
    let mut categories = BTreeSet::new();
    for row in text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| table") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 4, "a data row has four cells: {row}");
        categories.insert(cells[2].trim().to_string());
    }
    assert_eq!(categories, all_categories());
    for label in ["Lawful basis", "Recipients", "Categories of data subjects"] {
        assert_eq!(text.matches(&format!("**{label}:**")).count(), ROLES.len());
    }
    assert!(
        text.contains("pseudonymisation (consents.contact_id, contacts.id"),
        "{text}"
    );
    assert!(text.contains("row filters (consents, contacts"), "{text}");
    assert!(
        text.contains("enforced: 2 years after occurred_at, then masked (notes null)"),
        "{text}"
    );
    assert!(
        text.contains("- contacts: 10 years after the last contract"),
        "{text}"
    );
}

#[test]
fn register_csv_parses_with_every_role_and_category() {
    let out = maschera(&["policy", "register", &reference_policy(), "--format", "csv"]);
    let rows = maschera_tests::parse_csv(&String::from_utf8(out.stdout).expect("utf-8"));
    assert_eq!(rows[0][0], "role");
    assert!(
        rows.iter().all(|r| r.len() == 16),
        "every row has 16 fields"
    );
    let roles: BTreeSet<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(roles, ROLES.iter().copied().collect());
    let categories: BTreeSet<String> = rows[1..].iter().map(|r| r[10].clone()).collect();
    assert_eq!(categories, all_categories());
    let support_email = rows
        .iter()
        .find(|r| r[0] == "support" && r[8] == "contacts" && r[9] == "email")
        .expect("support sees contacts.email");
    assert_eq!(support_email[11], "mask.email");
    assert!(support_email[15].contains("TLS"));
}

/// The reference CRM generated with `contacts` contacts and the reference policy applied.
async fn crm_with_policy(contacts: u64) -> (PgServer, Client) {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, DB, contacts, 1).await.expect("load CRM");
    let credentials = pg.dir().join("logins.toml");
    maschera(&[
        "policy",
        "apply",
        &reference_policy(),
        "--upstream",
        &pg.uri(DB),
        "--credentials",
        &credentials.display().to_string(),
    ]);
    let client = pg.connect(DB).await.expect("connect");
    (pg, client)
}

/// Row count and md5 of the sorted row texts of `relation`, as the session currently sees it.
async fn fingerprint(client: &Client, relation: &str) -> (i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')
                 FROM {relation} t"
            ),
            &[],
        )
        .await
        .expect("fingerprint");
    (row.get(0), row.get(1))
}

async fn dumped_tables(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Dumps `role` (with `attrs`), loads the dump into a fresh database, and checks every table against
/// the role's view row for row; returns the dumped tables.
async fn dump_matches_view(
    pg: &PgServer,
    source: &Client,
    role: &str,
    attrs: &[(&str, &str)],
) -> Vec<String> {
    let (tables, stderr) =
        dump_with_policy_matches_view(pg, source, &reference_policy(), role, role, attrs).await;
    assert!(
        !stderr.contains("differs"),
        "the installed views are the reference policy's: {stderr}"
    );
    tables
}

/// [`dump_matches_view`] with the policy file `policy`, loaded into database `copy_<copy>`; returns
/// the dumped tables and what the dump wrote on standard error.
async fn dump_with_policy_matches_view(
    pg: &PgServer,
    source: &Client,
    policy: &str,
    role: &str,
    copy: &str,
    attrs: &[(&str, &str)],
) -> (Vec<String>, String) {
    let mut args: Vec<String> = ["dump", policy, "--upstream", &pg.uri(DB)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--role".to_string(), role.to_string()]);
    for (name, value) in attrs {
        args.extend(["--attr".to_string(), format!("{name}={value}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = maschera(&args);
    let file = pg.dir().join(format!("dump-{copy}.sql"));
    std::fs::write(&file, &out.stdout).expect("write dump");
    let target = format!("copy_{copy}");
    pg.create_database(&target).expect("target database");
    pg.psql(
        &target,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            &file.display().to_string(),
        ],
    )
    .expect("psql -f loads the dump");
    let copy = pg.connect(&target).await.expect("connect copy");
    let tables = dumped_tables(&copy).await;
    source
        .batch_execute("RESET ROLE")
        .await
        .expect("reset role");
    // Sealed as the superuser (the session user), who reads the key, as `maschera dump` does.
    for (name, value) in attrs {
        source
            .execute(
                &policy::attribute_seal::seal_session_sql(false),
                &[&format!("maschera.{name}"), value],
            )
            .await
            .expect("seal");
    }
    source
        .batch_execute(&format!("SET ROLE maschera_{role}"))
        .await
        .expect("set role");
    for (name, value) in attrs {
        source
            .execute(
                "SELECT set_config($1, $2, false)",
                &[&format!("maschera.{name}"), value],
            )
            .await
            .expect("attribute");
    }
    for table in &tables {
        let expected = fingerprint(source, &format!("maschera_{role}.{table}")).await;
        let got = fingerprint(&copy, &format!("public.{table}")).await;
        assert_eq!(got, expected, "{role}: table {table} differs from the view");
        assert!(expected.0 > 0, "{role}: table {table} is empty");
    }
    source.batch_execute("RESET ROLE").await.expect("reset");
    (tables, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn dump_loads_and_matches_each_roles_view_row_for_row() {
    let (pg, source) = crm_with_policy(2000).await;
    let support = dump_matches_view(&pg, &source, "support", &[]).await;
    assert_eq!(
        support,
        ["consents", "contacts", "interactions", "tickets"],
        "support: deals and Art. 9/10 tables are denied"
    );
    let copy = pg.connect("copy_support").await.expect("connect");
    let plain = count(
        &copy,
        "SELECT count(*) FROM contacts WHERE email NOT LIKE '%***%'",
    )
    .await;
    assert_eq!(plain, 0, "every email in the support dump is masked");

    let sales = dump_matches_view(&pg, &source, "sales", &[("region", "north")]).await;
    assert_eq!(
        sales,
        ["consents", "contacts", "deals", "interactions", "tickets"]
    );
    let copy = pg.connect("copy_sales").await.expect("connect");
    let north = count(&copy, "SELECT count(*) FROM contacts").await;
    let total = count(&source, "SELECT count(*) FROM contacts").await;
    let in_region = count(
        &source,
        "SELECT count(*) FROM contacts WHERE region = 'north'",
    )
    .await;
    assert_eq!(north, in_region, "sales north dumps the north only");
    assert!(north < total);

    // The pseudonymising role: the dump computes the pseudonyms itself; they equal the view's, so
    // the same contact keeps the same pseudonym in every table.
    let analyst = dump_matches_view(&pg, &source, "analyst", &[]).await;
    assert_eq!(
        analyst,
        ["consents", "contacts", "deals", "interactions", "tickets"]
    );
    let copy = pg.connect("copy_analyst").await.expect("connect");
    let joined = count(
        &copy,
        "SELECT count(*) FROM deals d JOIN contacts c ON c.id = d.contact_id",
    )
    .await;
    let deals = count(&source, "SELECT count(*) FROM deals").await;
    assert_eq!(joined, deals, "every deal joins its contact by pseudonym");

    // A policy file edited since `policy apply` (analysts limited to the north): the dump still
    // writes what the installed views show, not what the file says.
    let edited = pg.dir().join("edited.toml");
    let text = std::fs::read_to_string(reference_policy())
        .expect("policy")
        .replace(
            "[roles.analyst.tables.contacts]\n",
            "[roles.analyst.tables.contacts]\nfilter = \"region = 'north'\"\n",
        );
    assert!(text.contains("filter = \"region = 'north'\""));
    std::fs::write(&edited, text).expect("write policy");
    let edited = edited.display().to_string();
    let (_, stderr) =
        dump_with_policy_matches_view(&pg, &source, &edited, "analyst", "analyst_edited", &[])
            .await;
    assert!(
        stderr.contains("view maschera_analyst.contacts differs from the policy file"),
        "{stderr}"
    );
}

const CRM_TABLES: &[&str] = &[
    "consents",
    "contacts",
    "deals",
    "health_records",
    "interactions",
    "judicial_records",
    "tickets",
];

/// The single number `sql` (a `SELECT count(*) ...`) returns.
async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The column of a CRM table that names the contact.
fn subject_column(table: &str) -> &'static str {
    match table {
        "contacts" => "id",
        _ => "contact_id",
    }
}

/// How many rows of `table` are about the contacts the retention tests expire (every tenth id).
async fn rows_of_expired_contacts(client: &Client, table: &str) -> i64 {
    let column = subject_column(table);
    count(
        client,
        &format!("SELECT count(*) FROM {table} WHERE {column} % 10 = 0"),
    )
    .await
}

/// Per CRM table: the fingerprint of the rows not about contact `id`, and how many rows are about it.
async fn fingerprints_apart_from(client: &Client, id: i64) -> Vec<((i64, String), i64)> {
    let mut all = Vec::new();
    for table in CRM_TABLES {
        let column = subject_column(table);
        let others = fingerprint(
            client,
            &format!("(SELECT * FROM {table} WHERE {column} <> {id})"),
        )
        .await;
        let about: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {column} = $1"),
                &[&id],
            )
            .await
            .expect("count")
            .get(0);
        all.push((others, about));
    }
    all
}

#[tokio::test]
async fn forget_erases_the_subject_everywhere_and_nothing_else() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, DB, 2000, 1).await.expect("load CRM");
    let client = pg.connect(DB).await.expect("connect");
    let subject = client
        .query_one(
            "SELECT id, email FROM contacts c
             WHERE EXISTS (SELECT FROM judicial_records j WHERE j.contact_id = c.id)
               AND EXISTS (SELECT FROM interactions i WHERE i.contact_id = c.id)
               AND EXISTS (SELECT FROM consents s WHERE s.contact_id = c.id)
             ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("a contact with records in several tables");
    let (id, email): (i64, String) = (subject.get(0), subject.get(1));
    let before = fingerprints_apart_from(&client, id).await;
    let condition = format!("email = '{email}'");
    let forget = |extra: &[&str]| {
        let mut args = vec![
            "forget".to_string(),
            reference_policy(),
            "--upstream".into(),
            pg.uri(DB),
            "--table".into(),
            "contacts".into(),
            "--where".into(),
            condition.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        String::from_utf8(maschera(&args).stdout).expect("utf-8")
    };

    let plan = forget(&["--dry-run"]);
    assert!(!plan.contains(&email), "the plan shows no value: {plan}");
    for table in ["contacts", "consents", "interactions", "judicial_records"] {
        let line = plan
            .lines()
            .find(|l| l.starts_with(&format!("public.{table} ")))
            .unwrap_or_else(|| panic!("{table} in the plan: {plan}"));
        assert!(!line.contains(" 0 rows"), "{line}");
    }
    assert_eq!(
        fingerprints_apart_from(&client, id).await,
        before,
        "dry run changes nothing"
    );

    // The real erasure, recorded in an access log of its own.
    let keys: Vec<(String, String)> = String::from_utf8(maschera(&["audit", "keygen"]).stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = pg.dir().join("maschera.toml");
    std::fs::write(&config, "[audit]\ndir = \"audit\"\n").expect("config");
    let args = vec![
        "forget".to_string(),
        reference_policy(),
        "--upstream".into(),
        pg.uri(DB),
        "--table".into(),
        "contacts".into(),
        "--where".into(),
        condition.clone(),
        "--audit-config".into(),
        config.display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    maschera_with_env(&args, &keys);
    let mut log = String::new();
    for entry in std::fs::read_dir(pg.dir().join("audit")).expect("audit folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            log.push_str(&std::fs::read_to_string(path).expect("read log"));
        }
    }
    let erasure: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "erasure")
        .expect("an erasure event");
    let digest = erasure["subjects"][0].as_str().expect("subject digest");
    assert_eq!(digest.len(), 64);
    assert!(!log.contains(&email) && !log.contains(&format!("\"{id}\"")));
    assert!(
        erasure["detail"]
            .as_str()
            .is_some_and(|d| d.contains("public.contacts: 1 deleted")),
        "{erasure}"
    );

    let after = fingerprints_apart_from(&client, id).await;
    for ((table, (others_before, _)), (others_after, about_after)) in
        CRM_TABLES.iter().zip(&before).zip(&after)
    {
        assert_eq!(*about_after, 0, "{table}: a row of the subject remains");
        assert_eq!(others_after, others_before, "{table}: other rows changed");
    }

    let again = Command::new(maschera_bin())
        .args(["forget", &reference_policy(), "--upstream", &pg.uri(DB)])
        .args(["--table", "contacts", "--where", &condition])
        .output()
        .expect("run");
    assert!(!again.status.success(), "no subject left to forget");
    let refused = Command::new(maschera_bin())
        .args(["forget", &reference_policy(), "--upstream", &pg.uri(DB)])
        .args(["--table", "contacts", "--where", "true; DROP TABLE deals"])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("one condition"));
}

/// Added to the reference policy (which masks interaction notes after two years and deletes tickets
/// after five): contacts are deleted with their dependants five years after creation.
const RETENTION: &str = r#"
[tables.contacts.retention]
column = "created_at"
period = "5 years"
"#;

#[tokio::test]
async fn retention_deletes_expired_rows_with_their_dependants_and_masks_old_notes() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, DB, 2000, 1).await.expect("load CRM");
    let client = pg.connect(DB).await.expect("connect");
    client
        .batch_execute(
            "UPDATE contacts SET created_at = CASE WHEN id % 10 = 0 THEN now() - interval '6 years'
                                                   ELSE now() - interval '4 years' END;
             UPDATE interactions SET occurred_at = CASE WHEN id % 4 = 0 THEN now() - interval '3 years'
                                                        ELSE now() - interval '1 month' END;
             UPDATE tickets SET created_at = now() - interval '1 year';",
        )
        .await
        .expect("date the rows");
    let policy = pg.dir().join("retention.toml");
    let text = std::fs::read_to_string(reference_policy()).expect("policy") + RETENTION;
    std::fs::write(&policy, text).expect("write policy");
    let policy = policy.display().to_string();

    let kept = "contact_id % 10 <> 0";
    let mut before = Vec::new();
    for table in CRM_TABLES {
        let column = subject_column(table);
        let relation = match *table {
            "interactions" => format!(
                "(SELECT id, contact_id, channel, occurred_at, CASE WHEN id % 4 = 0 THEN NULL ELSE notes END
                  FROM interactions WHERE {kept})"
            ),
            _ => format!("(SELECT * FROM {table} WHERE {column} % 10 <> 0)"),
        };
        before.push((relation.clone(), fingerprint(&client, &relation).await));
    }
    let all_before: Vec<(i64, String)> = {
        let mut v = Vec::new();
        for table in CRM_TABLES {
            v.push(fingerprint(&client, table).await);
        }
        v
    };
    let expired = rows_of_expired_contacts(&client, "contacts").await;
    assert!(expired > 0);

    let dry = maschera(&[
        "retention",
        "run",
        &policy,
        "--upstream",
        &pg.uri(DB),
        "--dry-run",
    ]);
    let dry = String::from_utf8(dry.stdout).expect("utf-8");
    let dry_contacts = dry
        .lines()
        .find(|l| l.trim_start().starts_with("public.contacts"))
        .expect("contacts in the dry-run report");
    assert!(
        dry_contacts.contains(&format!(" {expired} rows would delete")),
        "{dry}"
    );
    assert!(dry.contains("public.judicial_records"), "{dry}");
    for (table, fp) in CRM_TABLES.iter().zip(&all_before) {
        assert_eq!(
            &fingerprint(&client, table).await,
            fp,
            "dry run changed {table}"
        );
    }

    let (audit_config, _) = audit_setup(pg.dir());
    let out = maschera(&[
        "retention",
        "run",
        &policy,
        "--upstream",
        &pg.uri(DB),
        "--batch",
        "37",
        "--audit-config",
        &audit_config.display().to_string(),
    ]);
    let report = String::from_utf8(out.stdout).expect("utf-8");
    let runs: Vec<serde_json::Value> = audit_records(&pg.dir().join("audit"))
        .into_iter()
        .filter(|r| r["event"] == "retention_run")
        .collect();
    assert_eq!(runs.len(), 1, "one retention_run record: {runs:?}");
    let detail = runs[0]["detail"].as_str().expect("detail");
    // The interactions rule comes after the contacts rule, whose deletions include interactions.
    let masked_notes = report
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("public.interactions"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("interactions in the report");
    for part in [
        format!("public.contacts: {expired} deleted"),
        format!("public.interactions: {masked_notes} masked"),
        "public.judicial_records: ".to_string(),
    ] {
        assert!(detail.contains(&part), "{part} in {detail}");
    }
    assert_eq!(
        runs[0]["rows"].as_u64(),
        Some(
            detail
                .split("; ")
                .map(|p| p
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("count"))
                .sum()
        ),
        "rows is the total of the per-table counts"
    );
    audit_verify(&audit_config);
    let contacts_line = report
        .lines()
        .find(|l| l.trim_start().starts_with("public.contacts"))
        .expect("contacts in the report");
    assert!(
        contacts_line.contains(&format!(" {expired} rows deleted")),
        "{report}"
    );
    for (table, (relation, fp)) in CRM_TABLES.iter().zip(&before) {
        let left = rows_of_expired_contacts(&client, table).await;
        assert_eq!(left, 0, "{table}: rows of expired contacts remain");
        let after_relation = match *table {
            "interactions" => {
                "(SELECT id, contact_id, channel, occurred_at, notes FROM interactions)".to_string()
            }
            _ => table.to_string(),
        };
        assert_eq!(
            &fingerprint(&client, &after_relation).await,
            fp,
            "{table}: rows within their period changed ({relation})"
        );
    }
    let old_notes = count(&client, "SELECT count(*) FROM interactions WHERE occurred_at < now() - interval '2 years' AND notes IS NOT NULL").await;
    assert_eq!(old_notes, 0);

    let again = maschera(&["retention", "run", &policy, "--upstream", &pg.uri(DB)]);
    let again = String::from_utf8(again.stdout).expect("utf-8");
    assert!(
        again.contains(" 0 rows deleted") && again.contains(" 0 rows masked"),
        "{again}"
    );
}

/// Invoices kept for a legal obligation (anonymised, unlinked) and a mail log linked by address only.
const ERASURE_TABLES: &str = "
CREATE TABLE invoices (id bigint PRIMARY KEY, contact_id bigint REFERENCES contacts (id),
                       customer_name text, amount numeric(12, 2) NOT NULL);
CREATE TABLE mail_log (id bigint PRIMARY KEY, recipient text NOT NULL, sent_at timestamptz NOT NULL);
INSERT INTO invoices SELECT id, id, first_name || ' ' || last_name, 100 FROM contacts WHERE id <= 50;
INSERT INTO mail_log SELECT id, email, now() FROM contacts WHERE id <= 50;
";

const ERASURE_POLICY: &str = r#"
[tables.invoices.columns]
contact_id = { category = "identifying", type = "bigint" }
customer_name = { category = "identifying", type = "text" }
[tables.invoices.erasure]
keep = { contact_id = "null", customer_name = "constant('erased')" }

[tables.mail_log.columns]
recipient = { category = "contact", type = "text" }
[tables.mail_log.erasure]
links = { recipient = "contacts.email" }
"#;

#[tokio::test]
async fn forget_keeps_what_the_policy_keeps_anonymised_and_follows_declared_links() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, DB, 200, 1).await.expect("load CRM");
    let client = pg.connect(DB).await.expect("connect");
    client.batch_execute(ERASURE_TABLES).await.expect("tables");
    let policy = pg.dir().join("erasure.toml");
    let text = std::fs::read_to_string(reference_policy()).expect("policy") + ERASURE_POLICY;
    std::fs::write(&policy, text).expect("write policy");
    let others = "(SELECT * FROM invoices WHERE id <> 7)";
    let invoices_before = fingerprint(&client, others).await;
    let mail_before = fingerprint(&client, "(SELECT * FROM mail_log WHERE id <> 7)").await;
    let out = maschera(&[
        "forget",
        &policy.display().to_string(),
        "--upstream",
        &pg.uri(DB),
        "--table",
        "contacts",
        "--where",
        "id = 7",
    ]);
    let report = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        report.contains("public.invoices") && report.contains("anonymised (kept)"),
        "{report}"
    );
    let invoice = client
        .query_one(
            "SELECT contact_id, customer_name, amount::text FROM invoices WHERE id = 7",
            &[],
        )
        .await
        .expect("the invoice is kept");
    assert_eq!(invoice.get::<_, Option<i64>>(0), None);
    assert_eq!(invoice.get::<_, String>(1), "erased");
    assert_eq!(invoice.get::<_, String>(2), "100.00");
    let mails = count(&client, "SELECT count(*) FROM mail_log WHERE id = 7").await;
    assert_eq!(mails, 0, "the linked mail log row is deleted");
    assert_eq!(fingerprint(&client, others).await, invoices_before);
    assert_eq!(
        fingerprint(&client, "(SELECT * FROM mail_log WHERE id <> 7)").await,
        mail_before
    );
}

/// Fresh access-log keys in `dir/keys` and a configuration file whose `[audit]` section writes to
/// `dir/audit`; returns the configuration's path and the section's body.
fn audit_setup(dir: &Path) -> (PathBuf, String) {
    let section = maschera_tests::access_log_section(dir, "lifecycle");
    let config = dir.join("audit.toml");
    std::fs::write(&config, format!("[audit]\n{section}")).expect("config");
    (config, section)
}

/// `maschera audit verify --config FILE` passes (exit 0: whole and sealed).
fn audit_verify(config: &Path) {
    let out = maschera(&["audit", "verify", "--config", &config.display().to_string()]);
    assert!(out.status.success());
}

/// Every record of the access log in `dir`.
fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return records;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(path).expect("read log");
            records.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    records
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The advisory lock a retention run holds (see `lifecycle::retention`).
const RETENTION_RUN_LOCK: i64 = 0x006d_6173_6372_6574;

#[tokio::test]
async fn serve_runs_retention_on_schedule_records_it_and_survives_a_failed_run() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, DB, 300, 1).await.expect("load CRM");
    let client = pg.connect(DB).await.expect("connect");
    client
        .batch_execute(
            "UPDATE contacts SET created_at = now() - interval '1 year';
             UPDATE interactions SET occurred_at = now() - interval '1 month';
             UPDATE tickets SET created_at = now() - interval '1 year';",
        )
        .await
        .expect("date the rows");
    let policy = pg.dir().join("retention.toml");
    let text = std::fs::read_to_string(reference_policy()).expect("policy") + RETENTION;
    std::fs::write(&policy, text).expect("write policy");
    let (audit_config, section) = audit_setup(pg.dir());
    let audit_dir = pg.dir().join("audit");
    let mut proxy = Proxy::start(
        &pg,
        ProxyOptions {
            database: DB.into(),
            audit: section,
            retention: format!(
                "interval_seconds = 1\nbatch = 7\npolicy = {:?}",
                policy.display().to_string()
            ),
            ..ProxyOptions::default()
        },
    )
    .expect("start the proxy");

    // A run that cannot take the lock fails, is recorded, and the proxy keeps serving.
    let holder = pg.connect(DB).await.expect("connect");
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&RETENTION_RUN_LOCK])
        .await
        .expect("hold the retention lock");
    let through_proxy = maschera_tests::connect(&proxy.uri(DB))
        .await
        .expect("connect through the proxy");
    through_proxy
        .batch_execute(
            "UPDATE contacts SET created_at = now() - interval '6 years' WHERE id % 10 = 0",
        )
        .await
        .expect("expire a tenth of the contacts");
    let kept_before = fingerprint(&client, "(SELECT * FROM contacts WHERE id % 10 <> 0)").await;
    let expired = rows_of_expired_contacts(&client, "contacts").await;
    assert!(expired > 0);
    let failed = wait_for(
        Duration::from_secs(60),
        "a failed retention_run record",
        || {
            let records = audit_records(&audit_dir);
            async move {
                records.into_iter().find(|r| {
                    r["event"] == "retention_run"
                        && r["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("another retention run is in progress"))
                })
            }
        },
    )
    .await;
    assert_eq!(failed["outcome"]["result"], "error", "{failed}");
    let left = rows_of_expired_contacts(&client, "contacts").await;
    assert_eq!(left, expired, "no run while another holds the lock");
    let one: i32 = through_proxy
        .query_one("SELECT 1", &[])
        .await
        .expect("the proxy still serves")
        .get(0);
    assert_eq!(one, 1);

    // Once the lock is free, the next slot deletes the expired contacts with their dependants.
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_RUN_LOCK])
        .await
        .expect("release the lock");
    let wanted = format!("public.contacts: {expired} deleted");
    let done = wait_for(
        Duration::from_secs(60),
        "a successful retention_run record",
        || {
            let records = audit_records(&audit_dir);
            let wanted = wanted.clone();
            async move {
                records.into_iter().find(|r| {
                    r["event"] == "retention_run"
                        && r["detail"].as_str().is_some_and(|d| d.contains(&wanted))
                })
            }
        },
    )
    .await;
    assert_eq!(done["outcome"]["result"], "ok", "{done}");
    for table in CRM_TABLES {
        let left = rows_of_expired_contacts(&client, table).await;
        assert_eq!(left, 0, "{table}: rows of expired contacts remain");
    }
    assert_eq!(
        fingerprint(&client, "(SELECT * FROM contacts WHERE id % 10 <> 0)").await,
        kept_before,
        "contacts within their period are untouched"
    );
    let log = proxy.log();
    assert!(log.contains("scheduled retention run finished"), "{log}");
    assert!(log.contains("scheduled retention run failed"), "{log}");

    proxy.signal(libc::SIGTERM);
    proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the proxy stops");
    audit_verify(&audit_config);
}
