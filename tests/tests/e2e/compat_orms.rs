//! More ORMs through the proxy enforcing the reference policy, each as four reference roles (`dora`
//! dpo, `sam` sales north, `tom` support, `ana` analyst), in session and in transaction mode: Drizzle
//! ORM, Objection.js and MikroORM (npm, on node-postgres; `tests/compat/orm/drizzle.js`,
//! `objection.js`, `mikroorm.js`), Peewee and Pony (PyPI, on psycopg2; `tests/compat/peewee_client.py`,
//! `pony_client.py`) and Tortoise ORM (PyPI, on asyncpg; `tortoise_client.py`), doing what
//! applications do with them:
//! introspection, select, pagination, joins and relations, JSON, insert ... returning, multi-row
//! inserts, the save of a loaded object (masked values written back unchanged), upsert and
//! insert-or-ignore, get-or-create, nested transactions (savepoints), server-side cursors, delete. And
//! asyncpg's `add_listener` (LISTEN/NOTIFY) for an unrestricted and a restricted role, and Sequelize's
//! `findOrCreate` with and without its function in `pg_temp`.
//! Each script prints one `op<TAB>outcome<TAB>detail` line per operation; these tests hold what each
//! user must get, that the masked values an ORM wrote back left the stored ones as they were, and
//! that no statement was refused as not understood (0A000). COMPATIBILITY.md ("More ORMs") is the
//! table of these expectations. Not for: Sequelize and TypeORM (orm_node.rs) or the plain drivers
//! (compat.rs, compat_more.rs).

use crate::compat::{Expect, Mode, Pass, Refused};
use crate::compat_more::{
    changes_interactions, contacts_row, first_contact_cell, health, inserts_interactions, node_in,
    python, relations, run_as_every_role, start, write,
};
use maschera_tests::CrmProxy;
use std::process::Command;

/// The first id each user's run writes (far above the generated ones, one range per user).
fn base(user: &str) -> &'static str {
    match user {
        "dora" => "810000",
        "sam" => "820000",
        "tom" => "830000",
        _ => "840000",
    }
}

/// `client` with the user's [`base`] id as its last argument.
fn with_base(client: impl Fn(&CrmProxy, &str) -> Command) -> impl Fn(&CrmProxy, &str) -> Command {
    move |env, user| {
        let mut command = client(env, user);
        command.arg(base(user));
        command
    }
}

/// The first contact as a JSON document built in SQL (`to_jsonb` of its row) shows the user.
fn json_cell(user: &str) -> &'static str {
    match user {
        "ana" => "keys=6",
        _ => first_contact_cell(user),
    }
}

/// The saved row after the save of a loaded object with every column (contacts; support: tickets).
fn save_loaded(user: &str) -> Expect {
    match user {
        "dora" => Pass("tax_code=CTTPLA95C61E717D"),
        "sam" => Pass("tax_code=************717D"),
        "tom" => Pass("subject="),
        _ => Refused("42501"),
    }
}

/// Pass for the unrestricted user; refused (42501) for every restricted one: an upsert (ON CONFLICT
/// DO UPDATE on a table with a row filter or a masked column), or a changed masked value.
fn dpo_only(user: &str, detail: &'static str) -> Expect {
    if user == "dora" {
        Pass(detail)
    } else {
        Refused("42501")
    }
}

/// Rows of contacts the user reads: sam's region, or all of them.
fn streamed(user: &str) -> &'static str {
    if user == "sam" {
        "streamed=79"
    } else {
        "streamed=200"
    }
}

/// The stored cells an ORM's save writes back masked or redacted: the first contact's tax code and
/// birth date, the first ticket's subject and body.
async fn stored_masked_cells(env: &CrmProxy) -> Vec<String> {
    let owner = env.owner().await;
    let contact = owner
        .query_one(
            "SELECT tax_code::text, birth_date::text FROM contacts ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("first contact");
    let ticket = owner
        .query_one("SELECT subject, body FROM tickets ORDER BY id LIMIT 1", &[])
        .await
        .expect("first ticket");
    vec![contact.get(0), contact.get(1), ticket.get(0), ticket.get(1)]
}

/// What every ORM script does alike (besides `expect`'s operations): its connection, the first page
/// of contacts (what their first row shows the user), the next page, the first contact as JSON,
/// health records, and the statement after their refusal.
fn shared_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    vec![
        ("connect", Pass("user=")),
        ("select", Pass(contacts_row(user))),
        ("select", Pass(first_contact_cell(user))),
        ("paginate", Pass("page=10")),
        ("json", Pass(json_cell(user))),
        ("select_health_records", health(user)),
        ("after_refusal", Pass("n=")),
    ]
}

/// Runs `client` as every user and checks, besides each operation's outcome ([`shared_expectations`]
/// and `expect`), that the saves of loaded objects (every column written, the masked values as read)
/// kept the stored values, and that they did save (the changed city or status is there); in
/// transaction mode, sessions were pinned for `pins` only.
fn orm_as_every_role(
    what: &str,
    mode: Mode,
    client: impl Fn(&CrmProxy, &str) -> Command,
    expect: impl Fn(&str) -> Vec<(&'static str, Expect)>,
    city: &str,
    pins: &[&str],
) {
    let env = start(mode);
    let before = maschera_tests::block_on(stored_masked_cells(&env));
    let expect = |user: &str| [shared_expectations(user), expect(user)].concat();
    run_as_every_role(&env, what, mode, client, expect, pins);
    maschera_tests::block_on(async {
        assert_eq!(
            stored_masked_cells(&env).await,
            before,
            "{what}: the masked values written back keep the stored ones"
        );
        let owner = env.owner().await;
        let saved: String = owner
            .query_one("SELECT city FROM contacts ORDER BY id LIMIT 1", &[])
            .await
            .expect("first contact")
            .get(0);
        assert_eq!(saved, city, "{what}: the saves changed the city");
        let status: String = owner
            .query_one("SELECT status FROM tickets ORDER BY id LIMIT 1", &[])
            .await
            .expect("first ticket")
            .get(0);
        assert_eq!(
            status, "pending",
            "{what}: support's save changed the status"
        );
    });
}

fn drizzle_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        ("join", Pass("channels=call,email,meeting")),
        ("relational_json", Pass("contacts=3 interactions=")),
        ("relational_json", Pass("linked=true")),
        ("enum_filter", Pass("n=")),
        ("insert_returning", write(inserts, "channel=call")),
        ("bulk_insert", write(inserts, "inserted=5")),
        ("insert_or_ignore", write(inserts, "inserted=1")),
        ("get_or_create", write(inserts, "channel=email")),
        ("upsert", dpo_only(user, "upserted=1")),
        ("update", write(changes, "updated=1")),
        ("save_loaded", save_loaded(user)),
        ("save_changed_masked", dpo_only(user, "updated=1")),
        ("transaction_savepoint", write(inserts, "kept=8")),
        ("cursor_in_transaction", Pass(streamed(user))),
        ("delete", write(changes, "deleted=9")),
    ]
}

fn drizzle_in(mode: Mode) {
    orm_as_every_role(
        "Drizzle",
        mode,
        with_base(node_in("orm", &["drizzle-orm", "pg"], "drizzle.js")),
        drizzle_expectations,
        "Drizzlecity",
        &[],
    );
}

fn objection_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        ("table_metadata", Pass(contacts_row(user))),
        ("graph_fetched", Pass("contacts=3 interactions=")),
        ("graph_joined", Pass("linked=true")),
        ("insert_returning", write(inserts, "channel=call")),
        ("bulk_insert", write(inserts, "inserted=5")),
        (
            "insert_graph",
            write(matches!(user, "dora" | "sam"), "interactions=1"),
        ),
        ("insert_or_ignore", write(inserts, "inserted=2")),
        ("get_or_create", write(inserts, "channel=email")),
        ("upsert", dpo_only(user, "upserted=1")),
        ("patch", write(changes, "updated=1")),
        ("save_loaded", save_loaded(user)),
        ("save_changed_masked", dpo_only(user, "updated=1")),
        ("transaction_savepoint", write(inserts, "kept=8")),
        // dora's and sam's runs have the contact of their `insert_graph` in it.
        ("cursor_in_transaction", Pass("streamed=")),
        ("delete", write(changes, "deleted=10 contacts=1")),
    ]
}

fn objection_in(mode: Mode) {
    orm_as_every_role(
        "Objection",
        mode,
        with_base(node_in("orm", &["objection", "knex", "pg"], "objection.js")),
        objection_expectations,
        "Objcity",
        &[],
    );
}

fn mikroorm_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        // Its schema diff lists base tables: a restricted role's relations are views (note 2).
        (
            "schema_diff",
            Pass(if user == "dora" {
                "creates_contacts=false"
            } else {
                "creates_contacts=true"
            }),
        ),
        ("populate", Pass("contacts=3 interactions=")),
        ("enum_filter", Pass("n=")),
        ("persist_flush", write(inserts, "channel=call")),
        ("persist_many", write(inserts, "inserted=5")),
        ("insert_many", write(inserts, "inserted=2")),
        ("upsert_ignore", write(inserts, "rows=9")),
        ("upsert", dpo_only(user, "channel=meeting")),
        ("change_loaded", save_loaded(user)),
        ("change_masked", dpo_only(user, "saved")),
        ("transaction_savepoint", write(inserts, "kept=9")),
        ("cursor_in_transaction", Pass(streamed(user))),
        ("delete", write(changes, "deleted=10")),
    ]
}

fn mikroorm_in(mode: Mode) {
    orm_as_every_role(
        "MikroORM",
        mode,
        with_base(node_in(
            "orm",
            &["@mikro-orm/core", "@mikro-orm/postgresql", "pg"],
            "mikroorm.js",
        )),
        mikroorm_expectations,
        "Mikrocity",
        &[],
    );
}

fn peewee_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        ("introspection", Pass(relations(user))),
        ("introspection", Pass(contacts_row(user))),
        ("join", Pass("channels=call,email,meeting")),
        ("prefetch", Pass("contacts=3 interactions=")),
        ("create", write(inserts, "id=")),
        ("insert_many", write(inserts, "inserted=5")),
        ("insert_or_ignore", write(inserts, "rows=7")),
        (
            "get_or_create",
            write(inserts, "created=True then=False channel=meeting"),
        ),
        ("upsert", dpo_only(user, "upserted")),
        ("update", write(changes, "updated=1")),
        ("save_loaded", save_loaded(user)),
        ("save_changed_masked", dpo_only(user, "updated=1")),
        ("transaction_savepoint", write(inserts, "kept=8")),
        ("server_side_cursor", Pass("holdable=True")),
        ("server_side_cursor", Pass(streamed(user))),
        (
            "server_side_cursor_psycopg3",
            Pass("driver=psycopg holdable=False"),
        ),
        ("server_side_cursor_psycopg3", Pass(streamed(user))),
        ("delete", write(changes, "deleted=9")),
    ]
}

fn peewee_in(mode: Mode) {
    orm_as_every_role(
        "Peewee",
        mode,
        with_base(python("peewee_client.py", "peewee")),
        peewee_expectations,
        "Peeweecity",
        // Peewee's `ServerSide()` on psycopg2 declares its named cursor `WITH HOLD` (psycopg2 allows
        // no named cursor in autocommit): it outlives a transaction, so the session is pinned. (On
        // psycopg 3, inside `atomic()`, the cursor is not holdable: `server_side_cursor_psycopg3`.)
        &["cursor WITH HOLD"],
    );
}

fn tortoise_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        // `CREATE TABLE IF NOT EXISTS`: DDL, refused to a restricted role even where its view exists.
        ("generate_schemas", dpo_only(user, "created")),
        ("join", Pass("channels=call,email,meeting")),
        ("prefetch_related", Pass("contacts=3 interactions=")),
        ("select_related", Pass("rows=5")),
        ("enum_filter", Pass("n=")),
        ("create", write(inserts, "channel=call")),
        ("bulk_create", write(inserts, "inserted=5")),
        ("bulk_create_ignore_conflicts", write(inserts, "rows=7")),
        (
            "get_or_create",
            write(inserts, "created=True then=False channel=meeting"),
        ),
        // `SELECT ... FOR UPDATE`, then an UPDATE: support may not update interactions.
        (
            "update_or_create",
            write(changes, "created=False channel=meeting"),
        ),
        ("upsert", dpo_only(user, "upserted")),
        ("save_loaded", save_loaded(user)),
        ("save_changed_masked", dpo_only(user, "saved")),
        ("transaction_savepoint", write(inserts, "kept=8")),
        ("delete", write(changes, "deleted=9")),
    ]
}

fn tortoise_in(mode: Mode) {
    orm_as_every_role(
        "Tortoise",
        mode,
        with_base(python("tortoise_client.py", "tortoise")),
        tortoise_expectations,
        "Tortoisecity",
        &[],
    );
}

fn pony_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    let changes = changes_interactions(user);
    vec![
        ("check_tables", Pass("mapped")),
        ("join", Pass("channels=call,email,meeting")),
        ("prefetch", Pass("contacts=3 interactions=")),
        ("create", write(inserts, "inserted=5")),
        // Its UPDATE checks the masked tax code (the redacted subject) as read in its WHERE.
        ("save_loaded", save_loaded(user)),
        ("save_changed_masked", dpo_only(user, "saved")),
        ("rollback", write(inserts, "kept=0")),
        ("delete", write(changes, "deleted=5")),
    ]
}

fn pony_in(mode: Mode) {
    orm_as_every_role(
        "Pony",
        mode,
        with_base(python("pony_client.py", "pony")),
        pony_expectations,
        "Ponycity",
        &[],
    );
}

#[test]
fn drizzle_as_every_reference_role() {
    drizzle_in(Mode::Session);
}

#[test]
fn drizzle_as_every_reference_role_in_transaction_mode() {
    drizzle_in(Mode::Transaction);
}

#[test]
fn objection_as_every_reference_role() {
    objection_in(Mode::Session);
}

#[test]
fn objection_as_every_reference_role_in_transaction_mode() {
    objection_in(Mode::Transaction);
}

#[test]
fn peewee_as_every_reference_role() {
    peewee_in(Mode::Session);
}

#[test]
fn peewee_as_every_reference_role_in_transaction_mode() {
    peewee_in(Mode::Transaction);
}

fn asyncpg_listen_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    // The reference policy gives no restricted role a channel (`[roles.<role>] channels`).
    let channel = |detail| dpo_only(user, detail);
    vec![
        ("add_listener", channel("listening")),
        ("notify", channel("sent")),
        (
            "receive",
            Pass(if user == "dora" {
                "received=crm_events:first,crm_events:second"
            } else {
                "received=none"
            }),
        ),
        ("remove_listener", Pass("removed")),
        ("after_refusal", Pass("n=")),
    ]
}

/// asyncpg's `add_listener` (`LISTEN`), with `NOTIFY` and `pg_notify` from a second connection: the
/// unrestricted user receives both payloads, in session mode and in transaction mode (where its
/// listening session is pinned to its connection, reason `LISTEN`); a restricted role is refused
/// each statement on the channel (42501, naming it), receives nothing, and goes on.
fn asyncpg_listen_in(mode: Mode) {
    let env = start(mode);
    run_as_every_role(
        &env,
        "asyncpg add_listener",
        mode,
        python("asyncpg_listen.py", "asyncpg"),
        asyncpg_listen_expectations,
        &["LISTEN"],
    );
    // Only the unrestricted user's listening sessions were pinned: a refused LISTEN pins nothing.
    let log = env.proxy.log();
    let pinned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session pinned"))
        .collect();
    assert_eq!(
        pinned.len(),
        usize::from(mode == Mode::Transaction),
        "{pinned:?}"
    );
    assert!(
        pinned.iter().all(|l| l.contains("role=\"dpo\"")),
        "{pinned:?}"
    );
}

#[test]
fn asyncpg_add_listener_for_an_unrestricted_and_the_restricted_roles() {
    asyncpg_listen_in(Mode::Session);
}

#[test]
fn asyncpg_add_listener_for_an_unrestricted_and_the_restricted_roles_in_transaction_mode() {
    asyncpg_listen_in(Mode::Transaction);
}

#[test]
fn tortoise_as_every_reference_role() {
    tortoise_in(Mode::Session);
}

#[test]
fn tortoise_as_every_reference_role_in_transaction_mode() {
    tortoise_in(Mode::Transaction);
}

fn find_or_create_expectations(user: &str) -> Vec<(&'static str, Expect)> {
    let inserts = inserts_interactions(user);
    vec![
        ("connect", Pass("contact=")),
        // The default: the INSERT inside a function Sequelize creates in pg_temp, refused to a
        // restricted role with the reason and what to send instead.
        ("find_or_create", dpo_only(user, "created=true")),
        ("after_refusal", Pass("n=")),
        (
            "without_function",
            write(
                inserts,
                "created=true channel=call; then created=false channel=call",
            ),
        ),
        (
            "without_function_in_transaction",
            write(inserts, "created=true then=false stored=1"),
        ),
    ]
}

/// Sequelize's `findOrCreate` (COMPATIBILITY.md, "Node ORMs" item 6): by default refused to every
/// restricted role (42501, its message naming `CREATE OR REPLACE FUNCTION` and what to send
/// instead), and with the dialect's `supports.EXCEPTION` off it creates, then finds, for every role
/// that may insert, in its own transaction and in the caller's. In transaction mode only the
/// unrestricted user's function in pg_temp pins its session. (The refusal's message is checked in
/// `orm_node`.)
fn sequelize_find_or_create_in(mode: Mode) {
    let env = start(mode);
    run_as_every_role(
        &env,
        "Sequelize findOrCreate",
        mode,
        with_base(node_in("orm", &["sequelize", "pg"], "find_or_create.js")),
        find_or_create_expectations,
        &["temporary object"],
    );
}

#[test]
fn sequelize_find_or_create_with_and_without_its_function() {
    sequelize_find_or_create_in(Mode::Session);
}

#[test]
fn sequelize_find_or_create_with_and_without_its_function_in_transaction_mode() {
    sequelize_find_or_create_in(Mode::Transaction);
}

#[test]
fn mikroorm_as_every_reference_role() {
    mikroorm_in(Mode::Session);
}

#[test]
fn mikroorm_as_every_reference_role_in_transaction_mode() {
    mikroorm_in(Mode::Transaction);
}

#[test]
fn pony_as_every_reference_role() {
    pony_in(Mode::Session);
}

#[test]
fn pony_as_every_reference_role_in_transaction_mode() {
    pony_in(Mode::Transaction);
}
