//! More real clients through the proxy enforcing the reference policy, each as four reference roles
//! (`dora` dpo, `sam` sales north, `tom` support, `ana` analyst), in session and in transaction mode:
//! asyncpg and SQLAlchemy's asyncio engine over it, psycopg2, postgres.js and Knex (its migrations
//! as the owner). The scripts (`tests/compat/asyncpg_client.py`, `psycopg2_client.py`,
//! `tests/compat/jsmore/`) print one `op<TAB>outcome<TAB>detail` line per operation; these tests hold
//! what each user must get (pass with a given detail, or refused with a given SQLSTATE), fail on any
//! `broken` line and on any statement the proxy refused as not understood (0A000).
//! COMPATIBILITY.md ("More drivers") is the table of these expectations. Not for: the Node ORMs
//! (orm_node.rs) or the first clients (compat.rs).

use crate::compat::{
    Expect, Mode, Pass, Refused, assert_mode, assert_parser_understood_everything, check,
    pool_section, run_client,
};
use maschera_tests::{CrmProxy, Fixture};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Contacts the generator writes: enough for cursors that fetch in several batches.
const CONTACTS: u64 = 200;

/// The users every client runs as, in this order.
const USERS: [&str; 4] = ["dora", "sam", "tom", "ana"];

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat")
}

pub(crate) fn start(mode: Mode) -> CrmProxy {
    maschera_tests::block_on(
        Fixture::crm(CONTACTS)
            .users([
                ("dora", "dpo", &[][..]),
                ("sam", "sales", &[("region", "north")][..]),
                ("tom", "support", &[][..]),
                ("ana", "analyst", &[][..]),
            ])
            .config(|options| options.sections.push_str(&pool_section(mode)))
            .start(),
    )
    .expect("CRM behind the proxy")
}

/// A Python client script of `tests/compat/`, after checking that `module` is importable.
pub(crate) fn python(
    script: &'static str,
    module: &'static str,
) -> impl Fn(&CrmProxy, &str) -> Command {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{module} is not installed: python3 -m pip install -r tests/compat/requirements-more.txt"
    );
    move |env, user| crate::compat::python(script, env, user)
}

/// A Node.js script of `tests/compat/jsmore/`, after checking that its packages are installed.
fn node(script: &'static str) -> impl Fn(&CrmProxy, &str) -> Command {
    node_in("jsmore", &["postgres", "knex", "pg"], script)
}

/// A Node.js script of `tests/compat/<folder>/` run as `node SCRIPT URI USER`, after checking that
/// `packages` are installed there.
pub(crate) fn node_in(
    folder: &str,
    packages: &[&str],
    script: &'static str,
) -> impl Fn(&CrmProxy, &str) -> Command {
    let dir = compat_dir().join(folder);
    for package in packages {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "{package} is not installed: run `npm ci` in {}",
            dir.display()
        );
    }
    move |env, user| {
        let mut command = Command::new("node");
        command
            .current_dir(&dir)
            .arg(script)
            .args([&env.uri(user), user]);
        command
    }
}

/// Runs `client` as every user of [`USERS`] (one after the other, on one CRM) and checks each
/// user's outcomes against `expect(user)`, and that in transaction mode sessions were pinned for
/// `pins` only.
fn as_every_role(
    what: &str,
    mode: Mode,
    client: impl Fn(&CrmProxy, &str) -> Command,
    expect: impl Fn(&str) -> Vec<(&'static str, Expect)>,
    pins: &[&str],
) {
    run_as_every_role(&start(mode), what, mode, client, expect, pins);
}

/// [`as_every_role`] on the proxy `env` (started in `mode`).
pub(crate) fn run_as_every_role(
    env: &CrmProxy,
    what: &str,
    mode: Mode,
    client: impl Fn(&CrmProxy, &str) -> Command,
    expect: impl Fn(&str) -> Vec<(&'static str, Expect)>,
    pins: &[&str],
) {
    for user in USERS {
        let label = format!("{what} as {user} ({mode:?} mode)");
        let outcomes = run_client(client(env, user), &label);
        check(&label, &outcomes, &expect(user));
    }
    assert_parser_understood_everything(env);
    assert_mode(env, mode, pins);
}

/// The user's relations as the reflection of an ORM lists them (its views, for a restricted role).
pub(crate) fn relations(user: &str) -> &'static str {
    match user {
        "dora" => "consents,contacts,deals,health_records,interactions,judicial_records,tickets",
        "tom" => "consents,contacts,interactions,tickets",
        _ => "consents,contacts,deals,interactions,tickets",
    }
}

/// What `SELECT * FROM contacts` shows the user: the number of columns and a cell of the first row.
pub(crate) fn contacts_row(user: &str) -> &'static str {
    match user {
        "dora" | "sam" => "columns=12",
        "tom" => "columns=9",
        _ => "columns=6",
    }
}

/// A cell of the first contact as the user reads it (the same in every client's detail): dora's clear
/// tax code, sam's masked one, tom's masked e-mail, the analyst's pseudonymous (text) id.
pub(crate) fn first_contact_cell(user: &str) -> &'static str {
    match user {
        "dora" => "CTTPLA95C61E717D",
        "sam" => "************717D",
        "tom" => "p***@mail.example.net",
        _ => "columns=6",
    }
}

/// Whether the user may insert interactions (dpo, sales in its region, support).
pub(crate) fn inserts_interactions(user: &str) -> bool {
    user != "ana"
}

/// Whether the user may update and delete interactions (dpo, sales).
pub(crate) fn changes_interactions(user: &str) -> bool {
    matches!(user, "dora" | "sam")
}

/// Pass(detail) for an allowed write, else refused 42501.
pub(crate) fn write(allowed: bool, detail: &'static str) -> Expect {
    if allowed {
        Pass(detail)
    } else {
        Refused("42501")
    }
}

/// Pass for dora, refused 42501 for every restricted role (health records are dpo's only).
pub(crate) fn health(user: &str) -> Expect {
    if user == "dora" {
        Pass("n=")
    } else {
        Refused("42501")
    }
}

fn asyncpg_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    vec![
        ("connect", Pass("user=")),
        ("select", Pass(contacts_row(user))),
        ("select", Pass(first_contact_cell(user))),
        ("prepared", Pass("executions=9")),
        (
            "binary_types",
            if user == "tom" {
                Refused("42501")
            } else {
                Pass("total_type=Decimal")
            },
        ),
        ("type_introspection", Pass("columns=")),
        ("cursor_in_transaction", Pass("page=7")),
        (
            "executemany",
            write(inserts_interactions(user), "inserted=10"),
        ),
        (
            "copy_records_to_table",
            write(inserts_interactions(user), "copied=5"),
        ),
        ("copy_from_query", Pass("lines=10")),
        ("copy_from_table", Pass("lines=")),
        (
            "copy_to_table",
            write(inserts_interactions(user), "status=COPY 3"),
        ),
        ("pool", Pass("acquired=4 n=79 concurrent=4")),
        ("select_health_records", health(user)),
        ("after_refusal", Pass("n=")),
        (
            "delete",
            write(changes_interactions(user), "status=DELETE 18"),
        ),
        ("sa_connect", Pass("schema=")),
        ("sa_reflect", Pass(relations(user))),
        (
            "sa_core",
            Pass(if user == "sam" {
                "regions=['north']"
            } else {
                "regions=['centre', 'north', 'south']"
            }),
        ),
        (
            "sa_orm_select",
            Pass("channels=['call', 'email', 'meeting']"),
        ),
        ("sa_stream", Pass("streamed=")),
        (
            "sa_orm_write",
            if matches!(user, "dora" | "sam") {
                Pass("stage=won")
            } else {
                Refused("42501")
            },
        ),
        (
            "sa_deals",
            if user == "tom" {
                Refused("42501")
            } else {
                Pass("deals=")
            },
        ),
    ]
}

fn asyncpg_and_sqlalchemy_asyncio_in(mode: Mode) {
    as_every_role(
        "asyncpg",
        mode,
        python("asyncpg_client.py", "asyncpg"),
        asyncpg_expectations,
        // asyncpg's own pool resets each connection it gets back with one simple query
        // `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`: it pins nothing
        // (proxy/src/pool/settings.rs).
        &[],
    );
}

fn psycopg2_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    vec![
        ("connect", Pass("user=")),
        ("select", Pass(contacts_row(user))),
        ("select", Pass(first_contact_cell(user))),
        ("interpolated", Pass("n=")),
        ("named_cursor", Pass("streamed=")),
        (
            "named_cursor_fetchmany",
            if user == "tom" {
                Refused("42501")
            } else {
                Pass("page=7")
            },
        ),
        (
            "execute_values",
            write(inserts_interactions(user), "inserted=10"),
        ),
        (
            "copy_expert_in",
            write(inserts_interactions(user), "copied=5"),
        ),
        ("copy_from", write(inserts_interactions(user), "copied=3")),
        ("copy_to", Pass("lines=")),
        ("copy_expert_out", Pass("lines=11")),
        ("update", write(changes_interactions(user), "updated=1")),
        (
            "execute_batch",
            write(changes_interactions(user), "rowcount="),
        ),
        ("session_settings", Pass("iso=serializable n=")),
        ("select_health_records", health(user)),
        ("after_refusal", Pass("n=")),
        ("delete", write(changes_interactions(user), "deleted=18")),
    ]
}

fn psycopg2_in(mode: Mode) {
    as_every_role(
        "psycopg2",
        mode,
        python("psycopg2_client.py", "psycopg2"),
        psycopg2_expectations,
        &[],
    );
}

fn postgresjs_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    vec![
        ("connect", Pass("user=")),
        ("select", Pass(contacts_row(user))),
        ("select", Pass(first_contact_cell(user))),
        ("prepared_repeat", Pass("executions=6")),
        ("pipelined", Pass("answers=12")),
        ("array_types", Pass("a=1,2,3 t=x,y")),
        (
            "unsafe_with_params",
            if user == "tom" {
                Refused("42501")
            } else {
                Pass("stages=")
            },
        ),
        ("cursor_in_transaction", Pass("streamed=")),
        (
            "insert_helper",
            write(inserts_interactions(user), "inserted=5"),
        ),
        (
            "copy_writable",
            write(inserts_interactions(user), "copied=2"),
        ),
        (
            "transaction_pipeline",
            write(changes_interactions(user), "channel=meeting"),
        ),
        ("select_health_records", health(user)),
        ("after_refusal", Pass("n=")),
        ("delete", write(changes_interactions(user), "deleted=7")),
    ]
}

fn postgresjs_in(mode: Mode) {
    as_every_role(
        "postgres.js",
        mode,
        node("postgresjs.js"),
        postgresjs_expectations,
        &[],
    );
}

fn knex_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let owner = user == "dora";
    vec![
        ("connect", Pass("user=")),
        ("migrate_latest", write(owner, "batch=1 files=1")),
        ("migrated_table", write(owner, "kind=note notes=1")),
        ("migrate_rollback", write(owner, "exists=false")),
        ("has_table", Pass("contacts=true")),
        ("column_info", Pass("columns=")),
        ("select", Pass(contacts_row(user))),
        ("select", Pass(first_contact_cell(user))),
        ("join_aggregate", Pass("channels=call,email,meeting")),
        ("paginate", Pass("page=10")),
        (
            "insert_returning",
            write(inserts_interactions(user), "inserted=3"),
        ),
        ("transaction", write(changes_interactions(user), "rows=4")),
        (
            "transaction_rollback",
            write(inserts_interactions(user), "kept=0"),
        ),
        ("update", write(changes_interactions(user), "updated=1")),
        ("select_health_records", health(user)),
        ("after_refusal", Pass("n=")),
        ("delete", write(changes_interactions(user), "deleted=4")),
    ]
}

fn knex_in(mode: Mode) {
    as_every_role("Knex", mode, node("knex.js"), knex_expectations, &[]);
}

#[test]
fn asyncpg_and_sqlalchemy_asyncio_as_every_reference_role() {
    asyncpg_and_sqlalchemy_asyncio_in(Mode::Session);
}

#[test]
fn asyncpg_and_sqlalchemy_asyncio_as_every_reference_role_in_transaction_mode() {
    asyncpg_and_sqlalchemy_asyncio_in(Mode::Transaction);
}

#[test]
fn psycopg2_as_every_reference_role() {
    psycopg2_in(Mode::Session);
}

#[test]
fn psycopg2_as_every_reference_role_in_transaction_mode() {
    psycopg2_in(Mode::Transaction);
}

#[test]
fn postgresjs_as_every_reference_role() {
    postgresjs_in(Mode::Session);
}

#[test]
fn postgresjs_as_every_reference_role_in_transaction_mode() {
    postgresjs_in(Mode::Transaction);
}

#[test]
fn knex_as_every_reference_role() {
    knex_in(Mode::Session);
}

#[test]
fn knex_as_every_reference_role_in_transaction_mode() {
    knex_in(Mode::Transaction);
}

/// Sends `data` with `COPY ... FROM STDIN` on `client`: the row count, or the error's SQLSTATE.
async fn copy_in(client: &tokio_postgres::Client, sql: &str, data: &str) -> Result<u64, String> {
    use futures_util::SinkExt;
    let state = |e: tokio_postgres::Error| {
        e.code()
            .map_or_else(|| format!("{e:?}"), |c| c.code().to_owned())
    };
    let sink = client.copy_in(sql).await.map_err(state)?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data.to_owned()))
        .await
        .map_err(state)?;
    sink.finish().await.map_err(state)
}

/// `COPY ... FROM STDIN` through the proxy (what asyncpg's `copy_records_to_table` and psycopg2's
/// `copy_expert` send) goes to the role's view, whose write trigger checks every row: a row of a
/// contact outside sam's region is refused (42501) and nothing of the COPY is stored, a masked column
/// in the column list is refused before any data is sent, and rows inside the filter are stored.
#[test]
fn copy_from_stdin_into_a_view_writes_only_what_an_insert_could() {
    let env = start(Mode::Session);
    maschera_tests::block_on(async {
        let owner = env.owner().await;
        let id_in = |region: &'static str| {
            let owner = &owner;
            async move {
                let row = owner
                    .query_one(
                        "SELECT id FROM contacts WHERE region = $1 ORDER BY id LIMIT 1",
                        &[&region],
                    )
                    .await
                    .expect("a contact");
                row.get::<_, i64>(0)
            }
        };
        let (north, south) = (id_in("north").await, id_in("south").await);
        let sam = env.through_proxy("sam").await;
        let copy = "COPY interactions (id, contact_id, channel) FROM STDIN";
        let outside = format!("970001\t{north}\tcall\n970002\t{south}\tcall\n");
        assert_eq!(
            copy_in(&sam, copy, &outside).await,
            Err("42501".to_owned()),
            "a row outside the filter"
        );
        let inside = format!("970003\t{north}\tcall\n970004\t{north}\temail\n");
        assert_eq!(copy_in(&sam, copy, &inside).await, Ok(2));
        let stored: Vec<i64> = owner
            .query(
                "SELECT id FROM interactions WHERE id BETWEEN 970001 AND 970004 ORDER BY id",
                &[],
            )
            .await
            .expect("stored rows")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stored, [970003, 970004], "only the COPY inside the filter");
        let masked = copy_in(
            &sam,
            "COPY contacts (id, first_name, last_name, email, phone, region, tax_code) FROM STDIN",
            "970005\tA\tB\ta@x.invalid\t+39 1\tnorth\tAAAAAA00A00A000A\n",
        )
        .await;
        assert_eq!(masked, Err("42501".to_owned()), "a masked column");
        let ana = env.through_proxy("ana").await;
        assert_eq!(
            copy_in(&ana, copy, "970006\t1\tcall\n").await,
            Err("42501".to_owned()),
            "the analyst writes nothing"
        );
        // The session goes on after the refusals.
        let n: i64 = sam
            .query_one("SELECT count(*) FROM interactions WHERE id >= 970000", &[])
            .await
            .expect("next statement")
            .get(0);
        assert_eq!(n, 2);
    });
}
