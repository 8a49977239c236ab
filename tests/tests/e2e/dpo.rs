//! What a data protection officer must answer, run by the real binary against a real PostgreSQL with the
//! reference CRM: the register of processing activities an authority accepts (`policy register`, GDPR
//! Art. 30, with `policy check` warning of each missing item), and a data subject's access and
//! portability request (`subject export`, Art. 15 and 20): all their rows and nothing of anyone else,
//! what is done with each category, who read those tables (from the access log), and the export itself
//! recorded in the access log without a value.

use maschera_tests::crm::load_crm;
use maschera_tests::crm_proxy::CRM_DB;
use maschera_tests::{
    CrmProxy, Fixture, PgServer, Ran, access_log_section, examples_dir, maschera_bin,
    run_maschera_with,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tokio_postgres::Client;

const ROLES: &[&str] = &["analyst", "dpo", "marketing", "sales", "support"];
/// The key of the subject digest the export records.
const DIGEST_KEY: &str = "dpo-test-subject-digest-key-0123456789";

fn reference_policy() -> String {
    examples_dir().join("crm/policy.toml").display().to_string()
}

fn maschera(args: &[&str]) -> Output {
    run_maschera_with(args, &[("MASCHERA_AUDIT_KEY", DIGEST_KEY)])
}

fn maschera_ok(args: &[&str]) -> String {
    Ran::of(maschera(args)).ok_stdout(&format!("maschera {args:?}"))
}

#[test]
fn register_of_the_reference_policy_holds_every_art30_item() {
    let json: Value = serde_json::from_str(&maschera_ok(&[
        "policy",
        "register",
        &reference_policy(),
        "--format",
        "json",
    ]))
    .expect("the register as JSON");
    // (a) controller, representative, DPO.
    let controller = &json["controller"];
    for field in ["name", "contact", "representative", "dpo"] {
        let text = controller[field].as_str().unwrap_or("");
        assert!(
            !text.is_empty() && text != "not given",
            "{field}: {controller}"
        );
    }
    let entries = json["entries"].as_array().expect("entries");
    let roles: Vec<&str> = entries.iter().filter_map(|e| e["role"].as_str()).collect();
    assert_eq!(roles, ROLES);
    for e in entries {
        let role = e["role"].as_str().unwrap();
        // (b) purpose and lawful basis.
        for field in ["purpose", "lawful_basis"] {
            assert_ne!(e[field], "not given", "{role} {field}");
        }
        // (c) categories of people (not table names) and of personal data.
        let subjects: BTreeSet<&str> = e["data_subjects"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["category"].as_str())
            .collect();
        assert_eq!(
            subjects,
            BTreeSet::from(["customers", "prospects"]),
            "{role}"
        );
        assert!(!e["personal_data"].as_array().unwrap().is_empty(), "{role}");
        // (d) recipients, each with a category.
        let recipients = e["recipients"].as_array().unwrap();
        assert!(!recipients.is_empty(), "{role}");
        for r in recipients {
            assert_ne!(r["category"], "not declared", "{role}: {r}");
        }
        // (f) a retention period for every personal table the role reaches.
        for line in e["retention"].as_array().unwrap() {
            assert!(
                !line.as_str().unwrap().contains("NOT SET"),
                "{role}: {line}"
            );
        }
        // (g) measures, read from what `policy apply` installs.
        let measures: Vec<&str> = e["measures"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        if role != "dpo" {
            let schema = format!("views in schema maschera_{role}");
            assert!(measures.iter().any(|m| m.contains(&schema)), "{measures:?}");
        }
    }
    // (e) transfers: the mailing provider is in the United States under standard contractual clauses.
    let marketing = &entries[2];
    assert_eq!(
        marketing["transfers"][0],
        "Mailing service provider: United States (standard contractual clauses, Art. 46(2)(c))"
    );
    assert_eq!(entries[3]["transfers"], serde_json::json!([]));

    let markdown = maschera_ok(&["policy", "register", &reference_policy()]);
    for label in [
        "Controller",
        "Representative",
        "Data protection officer",
        "Categories of data subjects",
        "Recipients",
        "Transfers to third countries",
    ] {
        assert_eq!(
            markdown.matches(&format!("**{label}:**")).count(),
            ROLES.len(),
            "{label}"
        );
    }
    assert!(markdown.contains(
        "- **Recipients:** Marketing team (internal), Mailing service provider (processor)"
    ));

    // `policy check`: the reference policy has no gap; without the new sections, each is a warning.
    let check = maschera(&["policy", "check", &reference_policy()]);
    assert!(check.status.success());
    assert!(
        !String::from_utf8_lossy(&check.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(reference_policy()).expect("policy");
    let cut = text
        .find("\n[controller]")
        .expect("the [controller] section");
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, &text[..cut]).expect("write");
    let check = maschera(&["policy", "check", &bare.display().to_string()]);
    assert!(check.status.success(), "gaps are warnings, not errors");
    let warnings = String::from_utf8_lossy(&check.stderr);
    for gap in [
        "warning: Art. 30(1)(a): no [controller]",
        "warning: Art. 30(1)(c): table `contacts` holds personal data of no declared category",
        "warning: Art. 30(1)(d): recipient `Mailing service provider`",
        "warning: Art. 30(1)(f): table `contacts` holds personal data and has no retention period",
        "warning: Art. 15(1)(g): table `judicial_records` holds personal data and declares no source",
        "warning: Art. 15(1)(h): role `marketing` states no automated decision-making",
    ] {
        assert!(warnings.contains(gap), "{gap}: {warnings}");
    }
    assert!(
        !warnings.contains("table `tickets` holds personal data and has no retention"),
        "tickets has an enforced rule"
    );
}

/// The CRM behind the proxy, with an access log in `dir/audit` and `dir/audit.toml` naming it.
async fn crm_with_access_log(dir: &Path) -> (CrmProxy, PathBuf) {
    let section = access_log_section(dir, "dpo");
    let config = dir.join("audit.toml");
    std::fs::write(&config, format!("[audit]\n{section}")).expect("config");
    let crm = Fixture::crm(2000)
        .config(|proxy| proxy.audit = section)
        .start()
        .await
        .expect("start the CRM");
    (crm, config)
}

/// A contact with consents, deals, interactions, tickets and a health record, in the north.
async fn full_contact(client: &Client) -> (i64, String) {
    let exists: Vec<String> = [
        "consents",
        "deals",
        "interactions",
        "tickets",
        "health_records",
    ]
    .iter()
    .map(|t| format!("EXISTS (SELECT FROM {t} x WHERE x.contact_id = c.id)"))
    .collect();
    let sql = format!(
        "SELECT id, email FROM contacts c WHERE region = 'north' AND {} ORDER BY id LIMIT 1",
        exists.join(" AND ")
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .expect("a contact with data in every table");
    (row.get(0), row.get(1))
}

/// Rows per table (`public.<t>`) that could hold the subject, counted directly (0 included).
async fn rows_of(client: &Client, id: i64) -> BTreeMap<String, i64> {
    let mut rows = BTreeMap::from([("public.contacts".to_string(), 1)]);
    // Every table with a `contact_id`, from the catalog (not from the code under test).
    let children = client
        .query(
            "SELECT table_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND column_name = 'contact_id'",
            &[],
        )
        .await
        .expect("tables with contact_id");
    for child in children {
        let table: String = child.get(0);
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE contact_id = $1"),
                &[&id],
            )
            .await
            .expect("count")
            .get(0);
        rows.insert(format!("public.{table}"), n);
    }
    rows
}

fn log_records(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read log")
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

#[tokio::test]
async fn export_of_a_contact_holds_all_their_data_and_nothing_of_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut crm, config) = crm_with_access_log(dir.path()).await;
    let owner = crm.pg.connect(CRM_DB).await.expect("connect");
    let (id, email) = full_contact(&owner).await;
    // Nothing of them in judicial_records: the export must still list it, with 0 rows.
    owner
        .execute("DELETE FROM judicial_records WHERE contact_id = $1", &[&id])
        .await
        .expect("no judicial record");
    let other: String = owner
        .query_one(
            "SELECT email FROM contacts WHERE id <> $1 ORDER BY id LIMIT 1",
            &[&id],
        )
        .await
        .expect("another contact")
        .get(0);
    let expected = rows_of(&owner, id).await;
    assert_eq!(expected.get("public.judicial_records"), Some(&0));
    let held: BTreeMap<String, i64> = expected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| (t.clone(), *n))
        .collect();

    // Reads through the proxy that "who saw it" must report: sam (sales) reads contacts and deals.
    let sam = maschera_tests::connect(&crm.uri("sam"))
        .await
        .expect("sam connects");
    sam.query("SELECT first_name, email FROM contacts LIMIT 5", &[])
        .await
        .expect("sam reads contacts");
    sam.query("SELECT contact_id, amount FROM deals LIMIT 5", &[])
        .await
        .expect("sam reads deals");
    drop(sam);
    crm.proxy.signal(libc::SIGTERM);
    crm.proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the proxy stops (the log folder takes one writer)");

    let upstream = crm.pg.uri(CRM_DB);
    let condition = format!("email = '{email}'");
    let export = |format: &str| {
        let config = config.display().to_string();
        maschera_ok(&[
            "subject",
            "export",
            &reference_policy(),
            "--upstream",
            &upstream,
            "--table",
            "contacts",
            "--where",
            &condition,
            "--format",
            format,
            "--audit-config",
            &config,
        ])
    };
    let text = export("json");
    assert!(!text.contains(&other), "nothing of another contact");
    let json: Value = serde_json::from_str(&text).expect("the export is JSON");
    assert_eq!(json["request"]["subject_table"], "public.contacts");
    assert_eq!(json["controller"]["name"], "Esempio CRM S.r.l.");
    let tables = json["tables"].as_array().expect("tables");
    let found: BTreeMap<String, i64> = tables
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found, expected,
        "every personal table that could hold the subject, with its rows (0 included)"
    );
    for t in tables {
        let name = t["table"].as_str().unwrap();
        let data = t["data"].as_array().expect("data");
        assert_eq!(data.len() as i64, t["rows"].as_i64().unwrap(), "{name}");
        for row in data {
            let whose = match name {
                "public.contacts" => &row["id"],
                _ => &row["contact_id"],
            };
            assert_eq!(
                whose.as_i64(),
                Some(id),
                "{name}: a row of someone else: {row}"
            );
        }
        assert!(!t["retention"].as_str().unwrap().is_empty(), "{name}");
        // Art. 15(1)(g): where the data comes from, as the reference policy declares it.
        let source = t["source"].as_str().unwrap();
        assert!(!source.contains("not declared"), "{name}: {source}");
    }
    let source_of = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap()["source"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(source_of("public.contacts").contains("list brokers"));
    assert!(source_of("public.judicial_records").contains("public registers"));
    assert_eq!(tables[0]["data"][0]["email"], email.as_str());
    // What is done with each category: contact data of contacts goes to sales for its purpose.
    let contacts = &tables[0];
    let contact_category = contacts["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "contact")
        .expect("contact category");
    let sales = contact_category["processing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "sales")
        .expect("sales processes contact data");
    assert!(
        sales["purpose"]
            .as_str()
            .unwrap()
            .contains("customer relationships")
    );
    assert!(sales["lawful_basis"].as_str().unwrap().contains("6(1)(b)"));
    // Art. 15(1)(h): each role's automated decision-making, profiling included.
    assert_eq!(sales["automated_decisions"], "none");
    let marketing = contact_category["processing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "marketing")
        .expect("marketing processes contact data");
    assert!(
        marketing["automated_decisions"]
            .as_str()
            .unwrap()
            .contains("lead scoring (profiling)")
    );
    // Art. 9 data: held and exported, and only the DPO processes it.
    let health = tables
        .iter()
        .find(|t| t["table"] == "public.health_records")
        .expect("health records exported");
    let health_roles: Vec<&str> = health["categories"][0]["processing"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["role"].as_str())
        .collect();
    assert_eq!(health["categories"][0]["category"], "special_category");
    assert_eq!(health_roles, ["dpo"]);
    // Who saw it: sam read contacts (contact data) and deals; the note says what the log can tell.
    let who = &json["who_saw_it"];
    assert!(who["note"].as_str().unwrap().contains("not which rows"));
    let accesses = who["accesses"].as_array().expect("accesses");
    let sam_contacts = accesses
        .iter()
        .find(|a| a["user"] == "sam" && a["table"] == "public.contacts")
        .unwrap_or_else(|| panic!("sam read contacts: {who}"));
    assert_eq!(sam_contacts["role"], "sales");
    assert!(
        sam_contacts["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "contact")
    );
    assert!(
        accesses
            .iter()
            .any(|a| a["user"] == "sam" && a["table"] == "public.deals")
    );
    assert!(
        !accesses
            .iter()
            .any(|a| a["table"] == "public.health_records"),
        "nobody read health records"
    );

    // CSV: one line per value, each with its category and purposes; an independent reader parses it.
    let csv = export("csv");
    let rows = maschera_tests::parse_csv(&csv);
    assert_eq!(rows[0][0], "record");
    assert!(rows.iter().all(|r| r.len() == 12));
    assert_eq!(rows[0][10], "source");
    assert_eq!(rows[0][11], "automated_decisions");
    let table_lines: BTreeMap<&str, &str> = rows
        .iter()
        .filter(|r| r[0] == "table")
        .map(|r| (r[1].as_str(), r[5].as_str()))
        .collect();
    assert_eq!(table_lines["public.judicial_records"], "0 rows");
    assert_eq!(
        table_lines.keys().copied().collect::<BTreeSet<_>>(),
        expected.keys().map(String::as_str).collect()
    );
    let email_line = rows
        .iter()
        .find(|r| r[0] == "data" && r[1] == "public.contacts" && r[3] == "email")
        .expect("the email value");
    assert_eq!(email_line[4], "contact");
    assert_eq!(email_line[5], email);
    assert!(email_line[6].contains("sales: Manage customer relationships"));
    assert!(email_line[10].contains("list brokers"));
    assert!(email_line[11].contains("marketing: lead scoring (profiling)"));
    let data_tables: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r[0] == "data")
        .map(|r| r[1].as_str())
        .collect();
    assert_eq!(data_tables, held.keys().map(String::as_str).collect());
    assert!(!csv.contains(&other));
    assert!(
        rows.iter()
            .any(|r| r[0] == "access" && r[5].contains("user sam"))
    );
    assert_eq!(who["earlier_requests"], serde_json::json!([]));
    let earlier: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "request").collect();
    assert_eq!(
        earlier.len(),
        1,
        "the JSON export, found by the subject's digest"
    );
    assert!(
        earlier[0][5].starts_with("subject_export by"),
        "{earlier:?}"
    );

    // The access log records both exports: digest, tables, counts, and no value.
    let records = log_records(&dir.path().join("audit"));
    let exports: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "subject_export")
        .collect();
    assert_eq!(exports.len(), 2, "one record per export");
    let record = exports[0];
    let digest = record["subjects"][0]
        .as_str()
        .expect("the subject's digest");
    assert_eq!(digest.len(), 64);
    assert_eq!(
        exports[1]["subjects"][0], digest,
        "the same subject, the same digest"
    );
    let total: i64 = held.values().sum();
    assert_eq!(record["rows"].as_i64(), Some(total));
    let detail = record["detail"].as_str().unwrap();
    for (table, n) in &expected {
        assert!(detail.contains(&format!("{table}: {n}")), "{detail}");
    }
    let logged: BTreeSet<String> = record["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}.{}", t["table"]["schema"], t["table"]["name"]).replace('"', ""))
        .collect();
    assert_eq!(logged, held.keys().cloned().collect());
    let log_text: String = records.iter().map(|r| r.to_string()).collect();
    assert!(!log_text.contains(&email), "no value in the access log");
    let config_arg = config.display().to_string();
    let search = maschera_ok(&[
        "audit",
        "search",
        "--config",
        &config_arg,
        "--category",
        "special_category",
    ]);
    assert!(
        search.contains("subject_export") && search.contains("public.health_records"),
        "an auditor finds the export of Art. 9 data: {search}"
    );
    let verify = maschera(&["audit", "verify", "--config", &config_arg]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test]
async fn export_refuses_a_subject_matched_by_no_row_or_by_several_and_records_a_failed_write() {
    let pg = PgServer::start().expect("start PostgreSQL");
    load_crm(&pg, CRM_DB, 300, 1).await.expect("load CRM");
    let section = access_log_section(pg.dir(), "dpo");
    let config = pg.dir().join("audit.toml");
    std::fs::write(&config, format!("[audit]\n{section}")).expect("config");
    let upstream = pg.uri(CRM_DB);
    let config = config.display().to_string();
    let policy = reference_policy();
    let export = |table: &str, condition: &str| {
        maschera(&[
            "subject",
            "export",
            &policy,
            "--upstream",
            &upstream,
            "--table",
            table,
            "--where",
            condition,
            "--audit-config",
            &config,
        ])
    };
    for (table, condition, says) in [
        (
            "contacts",
            "id = -1",
            "the condition selects 0 rows of public.contacts",
        ),
        (
            "contacts",
            "region = 'north'",
            "it must select exactly one data subject",
        ),
        ("contacts", "true; DROP TABLE deals", "one condition"),
        (
            "contacts",
            "id IN (SELECT contact_id FROM deals)",
            "no subqueries",
        ),
        ("no_such_table", "id = 1", "no table `no_such_table`"),
    ] {
        let out = export(table, condition);
        assert!(!out.status.success(), "{condition}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{condition}: {stderr}");
        assert!(out.stdout.is_empty(), "{condition}: nothing exported");
    }
    let records = log_records(&pg.dir().join("audit"));
    assert!(
        !records.iter().any(|r| r["event"] == "subject_export"),
        "a refused export is not recorded as one"
    );

    // An export that fails while writing (a full disk) is still recorded, with outcome error.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(maschera_bin())
        .args(["subject", "export", &policy, "--upstream", &upstream])
        .args([
            "--table",
            "contacts",
            "--where",
            "id = 1",
            "--audit-config",
            &config,
        ])
        .env("MASCHERA_AUDIT_KEY", DIGEST_KEY)
        .stdout(full)
        .output()
        .expect("run maschera");
    assert!(!out.status.success(), "writing to a full disk fails");
    let records = log_records(&pg.dir().join("audit"));
    let failed: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "subject_export")
        .collect();
    assert_eq!(failed.len(), 1, "the failed export is recorded");
    assert_eq!(failed[0]["outcome"]["result"], "error", "{}", failed[0]);
    assert_eq!(failed[0]["outcome"]["sqlstate"], "58030", "{}", failed[0]);
}
