//! The data lifecycle commands run by the real binary against a real PostgreSQL holding the reference
//! CRM: the register of processing (`policy register`), the anonymised dump (`dump`), erasure on request
//! (`forget`) and retention (`retention run`).

use maschera_tests::{examples_dir, maschera_bin};
use std::collections::BTreeSet;
use std::process::{Command, Output};

const ROLES: &[&str] = &["analyst", "dpo", "marketing", "sales", "support"];

fn maschera(args: &[&str]) -> Output {
    let out = Command::new(maschera_bin())
        .args(args)
        .env("MASCHERA_PSEUDONYM_KEY", "lifecycle-test-key-0123456789")
        .output()
        .expect("run maschera");
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

fn all_categories() -> BTreeSet<String> {
    policy::access::Category::all()
        .iter()
        .map(|c| c.as_str().to_string())
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
}

#[test]
fn register_csv_parses_with_every_role_and_category() {
    let out = maschera(&["policy", "register", &reference_policy(), "--format", "csv"]);
    // Python's csv module is an independent RFC 4180 reader.
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import csv,sys,json; print(json.dumps(list(csv.reader(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("write csv");
    let parsed = python.wait_with_output().expect("python3 output");
    assert!(parsed.status.success());
    let rows: Vec<Vec<String>> = serde_json::from_slice(&parsed.stdout).expect("json");
    assert_eq!(rows[0][0], "role");
    assert!(
        rows.iter().all(|r| r.len() == 12),
        "every row has 12 fields"
    );
    let roles: BTreeSet<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(roles, ROLES.iter().copied().collect());
    let categories: BTreeSet<String> = rows[1..].iter().map(|r| r[7].clone()).collect();
    assert_eq!(categories, all_categories());
    let support_email = rows
        .iter()
        .find(|r| r[0] == "support" && r[5] == "contacts" && r[6] == "email")
        .expect("support sees contacts.email");
    assert_eq!(support_email[8], "mask.email");
    assert!(support_email[11].contains("TLS"));
}
