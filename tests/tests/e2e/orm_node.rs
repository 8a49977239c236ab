//! The two most used Node ORMs through the proxy, as every reference role: Sequelize 6 (with `pg`) and
//! TypeORM, driven by `tests/compat/orm/{sequelize,typeorm}.js` (installed with `npm ci` there). Each
//! script does what an application does (list, find by key, count, includes, create, full-model save,
//! update of a masked value, delete, upsert, transactions, raw queries with binds), the ORM's start-up
//! and introspection, and a read of its migration table, as `sam` (sales, north), `mia` (marketing),
//! `tom` (support), `ana` (analyst) and `dora` (dpo), and prints one JSON line per operation. The tests
//! compare each result cell by cell with the owner's rows masked as the reference matrix says (rows
//! outside the role's filter absent), the refusals' SQLSTATEs, and after the writes the stored rows
//! (a masked value written back keeps the stored value; a refused or filtered write changes nothing).
//! Each test has a twin in transaction mode (`[pool] mode = "transaction"`, pools of 3 connections).
//! Prisma is not covered: it downloads its query engine from outside the package registries.
//! Not for: the raw drivers (compat.rs) or the policy's own rules (crm.rs, writeback.rs).

use crate::compat::{Mode, pool_section};
use maschera_tests::clients::simple_rows;
use maschera_tests::{CrmProxy, Fixture};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Contacts the generator writes.
const CONTACTS: u64 = 200;

/// How long one script run may take on a loaded machine.
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// The first id each script writes.
const BASE: i64 = 910_000;

/// The migration table rows the owner creates for each ORM: (table, its one row's name).
const MIGRATION_TABLES: &[(&str, &str)] = &[
    ("\"SequelizeMeta\"", "20240101000000-create-crm.js"),
    ("migrations", "CreateCrm1704067200000"),
];

/// The users of the run, in the order they run (dora last: her writes are unrestricted).
const USERS: &[(&str, &str)] = &[
    ("sam", "sales"),
    ("mia", "marketing"),
    ("tom", "support"),
    ("ana", "analyst"),
    ("dora", "dpo"),
];

/// The contact columns compared cell by cell (timestamps are compared as present only).
const CONTACT_COLUMNS: &[&str] = &[
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "tax_code",
    "street_address",
    "city",
    "region",
];

/// The row filter of `role` on contacts, as SQL over the base table.
fn contact_filter(role: &str) -> &'static str {
    match role {
        "sales" => "region = 'north'",
        "marketing" => {
            "id IN (SELECT contact_id FROM consents WHERE purpose = 'marketing' AND withdrawn_at IS NULL)"
        }
        _ => "true",
    }
}

/// What `role` sees of a contact's `column` holding `value`, or `None` when the column does not exist
/// for it (the matrix's `drop`). The analyst's pseudonym is checked apart (`Some(None)` here).
fn masked(role: &str, column: &str, value: Option<&str>) -> Option<Option<String>> {
    let year = |v: Option<&str>| v.map(|d| format!("{}-01-01", &d[..4]));
    let last = |v: Option<&str>, n: usize| {
        v.map(|s| {
            let chars: Vec<char> = s.chars().collect();
            let keep = chars.len().saturating_sub(n);
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| if i < keep { '*' } else { *c })
                .collect()
        })
    };
    let plain = value.map(str::to_owned);
    match (role, column) {
        ("dpo", _) | (_, "city" | "region") => Some(plain),
        ("sales", "birth_date") | ("marketing", "birth_date") | ("analyst", "birth_date") => {
            Some(year(value))
        }
        ("sales", "tax_code") => Some(last(value, 4)),
        ("sales", _) => Some(plain),
        ("marketing", "id" | "first_name" | "last_name" | "email") => Some(plain),
        ("support", "id" | "first_name") => Some(plain),
        ("support", "last_name") => Some(value.map(|v| format!("{}.", &v[..1]))),
        ("support", "email") => Some(value.map(|v| {
            let (local, domain) = v.split_once('@').unwrap();
            format!("{}***@{domain}", &local[..1])
        })),
        ("support", "phone") => Some(last(value, 3)),
        ("analyst", "id") => Some(None),
        _ => None,
    }
}

/// The contacts `role` must list for `condition` (owner rows, masked), as the scripts print them.
async fn expected_contacts(
    owner: &Client,
    role: &str,
    condition: &str,
    limit: usize,
) -> Vec<BTreeMap<String, Option<String>>> {
    let sql = format!(
        "SELECT id::text, first_name, last_name, email, phone, birth_date::text, tax_code::text, \
         street_address, city, region FROM contacts WHERE {condition} AND {} ORDER BY contacts.id LIMIT {limit}",
        contact_filter(role)
    );
    simple_rows(owner, &sql)
        .await
        .into_iter()
        .map(|row| {
            CONTACT_COLUMNS
                .iter()
                .zip(row)
                .filter_map(|(column, value)| {
                    masked(role, column, value.as_deref()).map(|v| ((*column).to_owned(), v))
                })
                .collect()
        })
        .collect()
}

/// One script's output: its JSON lines by operation.
type Outcomes = BTreeMap<String, Value>;

/// Runs `script` as `user` with its arguments and returns its lines by operation; panics with its
/// output unless it finished (`done`) with no `broken` line.
/// Panics too if its output holds any of `hidden` (values the user may not see).
fn run_script(
    env: &CrmProxy,
    script: &str,
    user: &str,
    [target, outside]: [&str; 2],
    hidden: &[String],
) -> Outcomes {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/orm");
    assert!(
        dir.join("node_modules/sequelize").is_dir() && dir.join("node_modules/typeorm").is_dir(),
        "the ORMs are not installed: run `npm ci` in {}",
        dir.display()
    );
    let out_dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .args([&env.uri(user), user, &BASE.to_string(), target, outside])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("node");
    let deadline = Instant::now() + SCRIPT_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let what = format!("{script} as {user}");
    assert!(
        stdout.lines().any(|l| l == "done"),
        "{what} did not finish:\n{stdout}\n---- stderr ----\n{stderr}"
    );
    let outcomes: Outcomes = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| (v["op"].as_str().unwrap().to_owned(), v))
        .collect();
    let broken: Vec<&Value> = outcomes
        .values()
        .filter(|v| v["outcome"] == "broken")
        .collect();
    assert!(broken.is_empty(), "{what}: broken: {broken:#?}");
    for value in hidden {
        assert!(
            !stdout.contains(value.as_str()),
            "{what}: a value the user may not see is in its results or errors"
        );
    }
    outcomes
}

/// The line of `op`, asserted to have passed.
fn passed<'o>(outcomes: &'o Outcomes, op: &str, what: &str) -> &'o Value {
    let line = outcomes
        .get(op)
        .unwrap_or_else(|| panic!("{what}: {op} not run"));
    assert_eq!(line["outcome"], "pass", "{what}: {op}: {line}");
    line
}

/// Asserts that `op` was refused with `sqlstate`.
fn refused(outcomes: &Outcomes, op: &str, sqlstate: &str, what: &str) {
    let line = outcomes
        .get(op)
        .unwrap_or_else(|| panic!("{what}: {op} not run"));
    assert!(
        line["outcome"] == "refused" && line["code"] == sqlstate,
        "{what}: {op}: expected refused {sqlstate}, got {line}"
    );
}

/// Asserts that a printed contact row holds exactly the `expected` cells (timestamps present, no
/// other column: a dropped column does not exist for the role), an analyst's id a pseudonym.
fn assert_contact(row: &Value, expected: &BTreeMap<String, Option<String>>, what: &str) {
    let object = row
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a row: {row}"));
    for (column, value) in expected {
        let got = object.get(column).and_then(Value::as_str);
        if column == "id" && value.is_none() {
            let id = got.unwrap_or_default();
            assert!(
                id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
                "{what}: id {id} is not a pseudonym"
            );
        } else {
            assert_eq!(got, value.as_deref(), "{what}: column {column} of {row}");
        }
    }
    for column in object.keys() {
        assert!(
            expected.contains_key(column)
                || [
                    "created_at",
                    "last_activity_at",
                    "interactions",
                    "deals",
                    "birth_date",
                    "city"
                ]
                .contains(&column.as_str()),
            "{what}: column {column} must not exist for the role: {row}"
        );
    }
}

/// The contact columns stored for `id`, as text.
async fn stored_contact(owner: &Client, id: &str) -> Vec<Option<String>> {
    simple_rows(
        owner,
        &format!(
            "SELECT first_name, last_name, email, phone, birth_date::text, tax_code::text, \
             street_address, city, region FROM contacts WHERE id = {id}"
        ),
    )
    .await
    .pop()
    .unwrap_or_default()
}

/// The ticket columns stored for `id`, as text.
async fn stored_ticket(owner: &Client, id: &str) -> Vec<Option<String>> {
    simple_rows(
        owner,
        &format!("SELECT subject, body, status FROM tickets WHERE id = {id}"),
    )
    .await
    .pop()
    .unwrap_or_default()
}

/// Stored values `role` may not see in anything a run prints: the clear tax codes and birth dates of
/// the contacts it reads masked (sales: its save target), the unmasked e-mails and phones (support),
/// and every unique value of the contact outside its filter.
async fn hidden_values(owner: &Client, role: &str, target: &str, outside: &str) -> Vec<String> {
    let sql = match role {
        "sales" => format!(
            "SELECT tax_code::text, birth_date::text FROM contacts WHERE id = {target} \
             UNION ALL SELECT email, phone FROM contacts WHERE id = {outside}"
        ),
        "marketing" => format!(
            "SELECT email, phone FROM contacts WHERE id = {outside} \
             UNION ALL SELECT tax_code::text, phone FROM contacts WHERE id <= 40"
        ),
        "support" => "SELECT email, phone FROM contacts WHERE id <= 40 \
             UNION ALL SELECT tax_code::text, birth_date::text FROM contacts WHERE id <= 40"
            .to_owned(),
        "analyst" => {
            "SELECT email, tax_code::text FROM contacts WHERE region = 'centre'".to_owned()
        }
        _ => return Vec::new(),
    };
    simple_rows(owner, &sql)
        .await
        .into_iter()
        .flatten()
        .flatten()
        // A birth date on 1 January is its own generalisation.
        .filter(|value| !value.ends_with("-01-01"))
        .collect()
}

/// One owner value.
async fn owner_value(owner: &Client, sql: &str) -> String {
    simple_rows(owner, sql).await[0][0]
        .clone()
        .unwrap_or_default()
}

fn start(mode: Mode) -> CrmProxy {
    maschera_tests::block_on(
        Fixture::crm(CONTACTS)
            .config(|options| options.sections.push_str(&pool_section(mode)))
            .users([
                ("dora", "dpo", &[][..]),
                ("sam", "sales", &[("region", "north")][..]),
                ("mia", "marketing", &[][..]),
                ("tom", "support", &[][..]),
                ("ana", "analyst", &[][..]),
            ])
            .access_log("orm-node")
            .before_proxy(|pg| {
                // The ORMs' migration tables, as their migration runners create them: framework
                // tables the reference policy does not list (`unlisted_tables = "deny"`).
                for (table, name) in MIGRATION_TABLES {
                    pg.psql(
                        maschera_tests::crm_proxy::CRM_DB,
                        &[
                            "-c",
                            &format!(
                                "CREATE TABLE {table} (id serial, name text PRIMARY KEY, timestamp bigint); \
                                 INSERT INTO {table} (name, timestamp) VALUES ('{name}', 1704067200000)"
                            ),
                        ],
                    )
                    .expect("migration table");
                }
            })
            .start(),
    )
    .expect("CRM behind the proxy")
}

/// Runs `script` (`sequelize.js` or `typeorm.js`, whose migration table and its row are `migration`)
/// as every reference user, with the users' upstream connections as `mode` says, and checks each
/// operation against the matrix and the stored rows.
fn orm_as_every_role(script: &str, migration: (&str, &str), mode: Mode) {
    let env = start(mode);
    let proxy_refusals = maschera_tests::block_on(async {
        let owner = env.owner().await;
        // North contacts past the listed ids, for sam's and then dora's saves.
        let north_targets: Vec<String> = simple_rows(
            &owner,
            "SELECT id::text FROM contacts WHERE region = 'north' AND id > 40 ORDER BY id LIMIT 3",
        )
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
        let ticket = owner_value(&owner, "SELECT min(id)::text FROM tickets").await;
        let outside_sales = owner_value(
            &owner,
            "SELECT min(id)::text FROM contacts WHERE region <> 'north'",
        )
        .await;
        let outside_marketing = owner_value(
            &owner,
            &format!(
                "SELECT min(id)::text FROM contacts WHERE NOT ({})",
                contact_filter("marketing")
            ),
        )
        .await;
        let mut proxy_refusals = BTreeMap::new();
        for (user, role) in USERS {
            let what = format!("{script} as {user}");
            let (target, outside) = match *role {
                "sales" => (north_targets[0].clone(), outside_sales.clone()),
                // dora's save of an unseen id overwrites it: one she has not listed.
                "dpo" => (north_targets[1].clone(), north_targets[2].clone()),
                "support" => (ticket.clone(), "1".to_owned()),
                "marketing" => ("-".to_owned(), outside_marketing.clone()),
                _ => ("-".to_owned(), "1".to_owned()),
            };
            let before_target = match *role {
                "support" => stored_ticket(&owner, &target).await,
                "sales" | "dpo" => stored_contact(&owner, &target).await,
                _ => Vec::new(),
            };
            let before_outside = stored_contact(&owner, &outside).await;
            let hidden = hidden_values(&owner, role, &target, &outside).await;
            let out = run_script(&env, script, user, [&target, &outside], &hidden);
            // The refusals of the proxy's own write rules (the database's errors are recorded as
            // errors, not refusals).
            let refused_by_proxy = out
                .values()
                .filter(|line| {
                    line["outcome"] == "refused"
                        && line["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("permission denied for table public."))
                })
                .count();
            proxy_refusals.insert(*user, refused_by_proxy);
            check_reads(&owner, &out, role, migration, &what).await;
            check_writes(&out, role, &what);
            // What the writes left in the database.
            match *role {
                "sales" | "dpo" => {
                    let after = stored_contact(&owner, &target).await;
                    // city was saved; every other column, masked ones included, kept as stored (the
                    // dpo's own tax code change aside).
                    assert_eq!(after[7].as_deref(), Some("Ormcity"), "{what}: {after:?}");
                    for i in [0, 1, 2, 3, 4, 6, 8] {
                        assert_eq!(after[i], before_target[i], "{what}: column {i}");
                    }
                    if *role == "sales" {
                        assert_eq!(after[5], before_target[5], "{what}: the stored tax code");
                        assert_eq!(
                            stored_contact(&owner, &outside).await,
                            before_outside,
                            "{what}: a row outside the filter changed"
                        );
                    }
                    let left = owner_value(
                        &owner,
                        &format!(
                            "SELECT count(*) FROM contacts WHERE id BETWEEN {BASE} AND {}",
                            BASE + 6
                        ),
                    )
                    .await;
                    assert_eq!(
                        left, "0",
                        "{what}: created rows deleted, rolled back one absent"
                    );
                }
                "support" => {
                    let after = stored_ticket(&owner, &target).await;
                    assert_eq!(after[..2], before_target[..2], "{what}: redacted text kept");
                    assert_eq!(after[2].as_deref(), Some("pending"), "{what}");
                    let body = owner_value(
                        &owner,
                        &format!("SELECT body FROM tickets WHERE id = {BASE}"),
                    )
                    .await;
                    assert_eq!(
                        body, "Call me at +39 333 1234567",
                        "{what}: a new ticket's text is stored as written"
                    );
                }
                _ => assert_eq!(
                    stored_contact(&owner, &outside).await,
                    before_outside,
                    "{what}"
                ),
            }
        }
        proxy_refusals
    });
    assert_audited(&env, &proxy_refusals);
    let log = env.proxy.log();
    assert_eq!(
        log.contains("session started in transaction mode"),
        mode == Mode::Transaction,
        "{mode:?}"
    );
    // In transaction mode the only pins (COMPATIBILITY.md note 7) are Sequelize's `findOrCreate`
    // as the unrestricted role (a function it creates and drops in `pg_temp`, reason `temporary
    // object`); its connect-time SETs and TypeORM's `SET TRANSACTION` no longer pin (a `SET` reason
    // stays tolerated); no SQL PREPARE, WITH HOLD cursor or other temporary object.
    let tolerated = |l: &str| {
        l.contains("reason=\"SET\"")
            || (script == "sequelize.js"
                && l.contains("role=\"dpo\"")
                && l.contains("reason=\"temporary object"))
    };
    let pinned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session pinned") && !tolerated(l))
        .collect();
    assert!(pinned.is_empty(), "{}", pinned.join("\n"));
    // Every statement the ORMs sent was understood: no refusal as not supported.
    let unsupported: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("statement refused") && line.contains("0A000"))
        .collect();
    assert!(unsupported.is_empty(), "{}", unsupported.join("\n"));
}

/// The access log holds a refused record (42501) under each user's name for every refusal of the
/// proxy's write rules it got (`refusals`), and none of the values the scripts wrote.
fn assert_audited(env: &CrmProxy, refusals: &BTreeMap<&str, usize>) {
    let refused_of = |records: &[Value], user: &str| {
        records
            .iter()
            .filter(|r| {
                r["user"] == user
                    && r["outcome"]["result"] == "refused"
                    && r["outcome"]["sqlstate"] == "42501"
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records = maschera_tests::access_log_records(&env.audit_dir());
        let complete = refusals
            .iter()
            .all(|(user, n)| refused_of(&records, user) >= *n);
        if complete || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (user, n) in refusals {
        assert!(
            refused_of(&records, user) >= *n,
            "{user}: {n} refusals, audited: {}",
            refused_of(&records, user)
        );
    }
    assert!(refusals.values().any(|n| *n > 0), "no refusal to audit");
    let text: String = records.iter().map(Value::to_string).collect();
    for literal in [
        "Ormcity",
        "orm910000@example.it",
        "XXXXXXXXXXXXXXXX",
        "Call me at",
    ] {
        assert!(
            !text.contains(literal),
            "the access log holds a value a statement wrote: {literal}"
        );
    }
}

/// The reads of one run: start-up, lists, lookups, counts, includes, raw queries, migration table.
async fn check_reads(
    owner: &Client,
    out: &Outcomes,
    role: &str,
    migration: (&str, &str),
    what: &str,
) {
    let user = passed(out, "connect", what)["user"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        role == "dpo" || user == format!("maschera_{role}"),
        "{what}: {user}"
    );
    let expected_columns: Vec<String> = {
        let mut columns: Vec<String> = CONTACT_COLUMNS
            .iter()
            .filter(|c| masked(role, c, None).is_some())
            .map(|c| (*c).to_owned())
            .chain(["created_at".to_owned(), "last_activity_at".to_owned()])
            .collect();
        columns.sort();
        columns
    };
    match out.get("describe") {
        Some(line) if line["outcome"] == "pass" => {
            let got: Vec<String> =
                serde_json::from_value(line["columns"].clone()).unwrap_or_default();
            assert_eq!(got, expected_columns, "{what}: describe");
        }
        _ => panic!("{what}: describe: {:?}", out.get("describe")),
    }

    // Sequelize's sync(): it asks information_schema.tables whether each model's table exists in
    // schema `public` and creates the missing ones. A restricted role's tables are views in its own
    // schema, which the proxy adds to that catalog predicate (catalog_schema.rs): every table
    // exists, nothing is created (until session 12 it sent CREATE TABLE, refused as DDL).
    if out.contains_key("sync") {
        passed(out, "sync", what);
    }

    // A model of every column: a role with a dropped column is refused, naming the column.
    if matches!(role, "dpo" | "sales") {
        passed(out, "full_model", what);
    } else {
        refused(out, "full_model", "42501", what);
        let message = out["full_model"]["message"].as_str().unwrap();
        assert!(
            message.contains("of table public.contacts: not available to this role"),
            "{what}: {message}"
        );
    }

    // List: the owner's rows under the role's filter, masked, in order.
    let rows = passed(out, "list", what)["rows"]
        .as_array()
        .unwrap()
        .clone();
    if role == "analyst" {
        // Ordered by pseudonym: compare the rows without their ids, as multisets.
        let expected = expected_contacts(owner, role, "region = 'centre'", 1000).await;
        let mut want: Vec<String> = expected
            .iter()
            .map(|r| format!("{:?} {:?}", r["birth_date"], r["city"]))
            .collect();
        let mut got: Vec<String> = rows
            .iter()
            .map(|r| {
                let mut cells = BTreeMap::new();
                for c in ["birth_date", "city"] {
                    cells.insert(c, r[c].as_str().map(str::to_owned));
                }
                format!("{:?} {:?}", cells["birth_date"], cells["city"])
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{what}: list");
        // Each row: the analyst's columns only, a pseudonym for an id, the listed region.
        let shape: BTreeMap<String, Option<String>> =
            [("id", None), ("region", Some("centre".to_owned()))]
                .into_iter()
                .map(|(c, v)| (c.to_owned(), v))
                .collect();
        for row in &rows {
            assert_contact(row, &shape, what);
            let mut keys: Vec<&String> = row.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, expected_columns.iter().collect::<Vec<_>>(), "{what}");
        }
    } else {
        let expected = expected_contacts(owner, role, "id <= 40", 25).await;
        let ids = |rows: Vec<Option<&str>>| {
            rows.into_iter()
                .map(|id| id.unwrap_or("?").to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(rows.iter().map(|r| r["id"].as_str()).collect()),
            ids(expected.iter().map(|r| r["id"].as_deref()).collect()),
            "{what}: list"
        );
        for (row, expected) in rows.iter().zip(&expected) {
            assert_contact(row, expected, what);
        }
    }
    assert!(!rows.is_empty(), "{what}: nothing listed");
    let first = &rows[0];
    assert_eq!(
        &passed(out, "find_pk", what)["row"],
        first,
        "{what}: find_pk"
    );
    let outside = &passed(out, "find_pk_outside", what)["row"];
    if matches!(role, "sales" | "marketing" | "analyst") {
        assert!(
            outside.is_null(),
            "{what}: a row outside the filter: {outside}"
        );
    }
    let count = owner_value(
        owner,
        &format!(
            "SELECT count(*) FROM contacts WHERE region IN ('north', 'centre') AND {}",
            contact_filter(role)
        ),
    )
    .await;
    assert_eq!(
        passed(out, "count", what)["n"],
        count.as_str(),
        "{what}: count"
    );
    let raw = owner_value(
        owner,
        &format!(
            "SELECT count(*) FROM contacts WHERE region = 'north' AND city IS NOT NULL AND {}",
            contact_filter(role)
        ),
    )
    .await;
    assert_eq!(
        passed(out, "raw_bind", what)["n"],
        raw.as_str(),
        "{what}: raw_bind"
    );

    // A page with includes: the first five listed contacts, each with all its interactions, and the
    // count of every contact the page's condition and the role's filter select.
    let page = passed(out, "include_page", what);
    let condition = if role == "analyst" {
        "region = 'centre'"
    } else {
        "id <= 40"
    };
    let total = owner_value(
        owner,
        &format!(
            "SELECT count(*) FROM contacts WHERE {condition} AND {}",
            contact_filter(role)
        ),
    )
    .await;
    assert_eq!(page["count"], total.as_str(), "{what}: include_page count");
    let page_rows = page["rows"].as_array().unwrap();
    assert_eq!(page_rows.len(), 5.min(rows.len()), "{what}: include_page");
    for (row, listed) in page_rows.iter().zip(&rows) {
        assert_eq!(row["id"], listed["id"], "{what}: include_page order");
        let children = row["interactions"].as_array().unwrap();
        assert!(
            children.iter().all(|c| c["contact_id"] == row["id"]),
            "{what}: {row}"
        );
        if role != "analyst" {
            let stored = owner_value(
                owner,
                &format!(
                    "SELECT count(*) FROM interactions WHERE contact_id = {}",
                    row["id"].as_str().unwrap()
                ),
            )
            .await;
            assert_eq!(children.len().to_string(), stored, "{what}: {row}");
        }
    }

    // Include: the first contact with its interactions (and deals where the role has them).
    let included = &passed(out, "include", what)["row"];
    let first_id = if role == "analyst" {
        // The pseudonym's contact: the one whose deals and interactions the owner counts alike.
        None
    } else {
        first["id"].as_str().map(str::to_owned)
    };
    let interactions = included["interactions"].as_array().unwrap();
    if let Some(id) = &first_id {
        let stored = simple_rows(
            owner,
            &format!("SELECT id::text, channel, notes FROM interactions WHERE contact_id = {id} ORDER BY interactions.id"),
        )
        .await;
        assert_eq!(interactions.len(), stored.len(), "{what}: include");
        for (got, want) in interactions.iter().zip(&stored) {
            assert_eq!(got["id"].as_str(), want[0].as_deref(), "{what}");
            assert_eq!(got["channel"].as_str(), want[1].as_deref(), "{what}");
            assert_eq!(got["contact_id"].as_str(), Some(id.as_str()), "{what}");
            match role {
                "dpo" | "sales" => assert_eq!(got["notes"].as_str(), want[2].as_deref(), "{what}"),
                "marketing" => assert!(got.get("notes").is_none(), "{what}: notes dropped"),
                _ => {}
            }
        }
        if matches!(role, "dpo" | "sales") {
            let deals = simple_rows(
                owner,
                &format!("SELECT amount::text FROM deals WHERE contact_id = {id} ORDER BY amount"),
            )
            .await;
            let mut got: Vec<&str> = included["deals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["amount"].as_str().unwrap())
                .collect();
            got.sort_by(|a, b| a.parse::<f64>().unwrap().total_cmp(&b.parse().unwrap()));
            let want: Vec<&str> = deals.iter().map(|r| r[0].as_deref().unwrap()).collect();
            assert_eq!(got, want, "{what}: deals");
        } else {
            assert!(included.get("deals").is_none(), "{what}: deals denied");
        }
    } else {
        // Analyst: every child row carries the contact's pseudonym, no clear id, no free text.
        let pseudonym = first["id"].as_str().unwrap();
        for child in interactions
            .iter()
            .chain(included["deals"].as_array().unwrap())
        {
            assert_eq!(child["contact_id"].as_str(), Some(pseudonym), "{what}");
            assert_eq!(
                child["id"].as_str().map(str::len),
                Some(64),
                "{what}: {child}"
            );
            assert!(child.get("notes").is_none(), "{what}: notes dropped");
        }
    }

    // The ORM's migration table: a framework table the reference policy does not list.
    if role == "dpo" {
        let names = &passed(out, "migrations_read", what)["names"];
        assert_eq!(names, &serde_json::json!([migration.1]), "{what}");
    } else {
        refused(out, "migrations_read", "42501", what);
        if out.contains_key("migrations_show") {
            // TypeORM does not see the table and creates it: DDL, refused.
            refused(out, "migrations_show", "42501", what);
        }
    }
    if role == "dpo" && out.contains_key("migrations_show") {
        assert_eq!(
            passed(out, "migrations_show", what)["pending"],
            "false",
            "{what}"
        );
    }
    passed(out, "after_refusals", what);
}

fn script_is_sequelize(what: &str) -> bool {
    what.starts_with("sequelize")
}

/// The writes of one run, by role.
fn check_writes(out: &Outcomes, role: &str, what: &str) {
    // Reads inside a serializable transaction, and an existence test.
    passed(out, "serializable", what);
    if out.contains_key("exists_by") {
        assert_eq!(passed(out, "exists_by", what)["exists"], "true", "{what}");
    }
    let more_writes = [
        "find_create_find",
        "bulk_ignore",
        "insert_many",
        "lock",
        "cleanup",
    ];
    if matches!(role, "marketing" | "analyst") {
        for op in more_writes.iter().chain(&["find_or_create"]) {
            // The analyst's id is a text pseudonym: the lookups by a number fail first.
            let state = if role == "analyst" && op.starts_with("find_") {
                "42883"
            } else {
                "42501"
            };
            if out.contains_key(*op) {
                refused(out, op, state, what);
            }
        }
    } else {
        for op in more_writes {
            if out.contains_key(op) {
                passed(out, op, what);
            }
        }
        for op in ["bulk_ignore", "insert_many"] {
            if out.contains_key(op) {
                // Two rows asked for, one already there (ignored) or both new.
                assert_eq!(passed(out, op, what)["n"], "2", "{what}: {op}");
            }
        }
        if out.contains_key("find_create_find") {
            assert_eq!(out["find_create_find"]["created"], "true,false", "{what}");
        }
        if out.contains_key("find_or_create") {
            if role == "dpo" {
                passed(out, "find_or_create", what);
            } else {
                // Sequelize's findOrCreate creates a function in pg_temp around its INSERT: DDL,
                // refused with the reason and what to send instead (see the ignored test below);
                // findCreateFind is the way that works.
                refused(out, "find_or_create", "42501", what);
                let message = out["find_or_create"]["message"].as_str().unwrap();
                assert!(
                    message.contains("CREATE OR REPLACE FUNCTION is DDL")
                        && message.contains("send its statements directly"),
                    "{what}: {message}"
                );
            }
        }
    }
    let writes = [
        "create",
        "save_full",
        "tx_managed_rollback",
        "tx_unmanaged_commit",
    ];
    match role {
        "marketing" | "analyst" => {
            for op in writes
                .iter()
                .chain(&["update_masked", "upsert", "delete", "save_outside"])
                .chain(&["tx_unmanaged_rollback"])
                .chain(&["save_changed", "insert_or_ignore"])
            {
                if out.contains_key(*op) {
                    refused(out, op, "42501", what);
                }
            }
        }
        _ => {
            for op in writes {
                passed(out, op, what);
            }
            for op in ["tx_managed_rollback", "tx_unmanaged_rollback"] {
                assert!(passed(out, op, what)["row"].is_null(), "{what}: {op}");
            }
            assert_eq!(
                passed(out, "tx_unmanaged_commit", what)["row"]["id"],
                (BASE + 2).to_string().as_str(),
                "{what}: committed"
            );
            for op in ["save_changed", "insert_or_ignore"] {
                if out.contains_key(op) {
                    passed(out, op, what);
                }
            }
            if role == "dpo" {
                for op in ["update_masked", "upsert", "delete"] {
                    passed(out, op, what);
                }
            } else {
                // A changed masked or redacted value, and an upsert on a filtered or masked table.
                refused(out, "update_masked", "42501", what);
                let upsert = &out["upsert"];
                assert!(
                    upsert["outcome"] == "refused"
                        && upsert["code"] == "42501"
                        && upsert["message"]
                            .as_str()
                            .unwrap()
                            .contains("ON CONFLICT DO UPDATE"),
                    "{what}: upsert {upsert}"
                );
            }
            if role == "sales" {
                // Saved by the id of a row outside the filter: Sequelize updates by id (no row
                // matches), TypeORM finds nothing and inserts (the key exists: a unique violation,
                // its message withheld). The stored row is checked unchanged by the caller.
                if script_is_sequelize(what) {
                    passed(out, "save_outside", what);
                } else {
                    refused(out, "save_outside", "23505", what);
                }
            }
            match role {
                "sales" | "dpo" => {
                    assert_eq!(passed(out, "delete", what)["deleted"], "3", "{what}");
                    let saved = &passed(out, "save_full", what)["row"];
                    assert_eq!(saved["city"], "Ormcity", "{what}");
                }
                _ => refused(out, "delete", "42501", what),
            }
        }
    }
}

#[test]
fn sequelize_as_every_reference_role() {
    orm_as_every_role("sequelize.js", MIGRATION_TABLES[0], Mode::Session);
}

#[test]
fn typeorm_as_every_reference_role() {
    orm_as_every_role("typeorm.js", MIGRATION_TABLES[1], Mode::Session);
}

#[test]
fn sequelize_as_every_reference_role_in_transaction_mode() {
    orm_as_every_role("sequelize.js", MIGRATION_TABLES[0], Mode::Transaction);
}

#[test]
fn typeorm_as_every_reference_role_in_transaction_mode() {
    orm_as_every_role("typeorm.js", MIGRATION_TABLES[1], Mode::Transaction);
}

/// Sequelize's `describeTable` (what `sequelize-auto`, `queryInterface` migrations and `sync({ alter })`
/// call) for a restricted role: its query reads `pg_catalog.pg_statio_all_tables` for column comments
/// (the proxy gives a restricted role the relations' names with every counter NULL: table_stats.rs)
/// and names the schema `public` while the role's relations are views in its own schema (the proxy
/// adds the role's view schema to such a catalog predicate: catalog_schema.rs). Until session 12 it
/// was refused (42501).
#[test]
fn sequelize_describe_table_for_a_restricted_role() {
    let env = start(Mode::Session);
    let out = run_script(&env, "sequelize.js", "sam", ["-", "1"], &[]);
    let line = passed(&out, "describe", "sequelize.js as sam");
    assert_eq!(line["columns"].as_array().map(Vec::len), Some(12));
}
