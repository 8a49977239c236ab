//! Session state made out of the statement text's sight in transaction mode: a temporary table,
//! view or sequence created inside a function, a procedure or dynamic SQL pins its client (the
//! event trigger `policy apply` installs tells the proxy, which keeps the notice from the client),
//! so the next client of the pool never sees it; a `DO` block pins (its settings stay with its
//! client); a restricted role calling a function its policy names is pinned the same way; so is
//! a client whose function changed a setting PostgreSQL reports (`TimeZone`, `DateStyle`), while a
//! local one pins nothing; `set_config(..., true)` ends with its transaction and pins nothing; `policy apply`
//! without a superuser says that the trigger is missing, and a superuser's apply installs it.
//! Not for: state the text shows (pooling_state.rs, pooling.rs).

use super::applyowner::{apply, owned_crm, owner_uri};
use super::pooling::{connect, failure, pool_section, pooled_proxy, rows};
use maschera_tests::crm_proxy::CRM_DB;
use maschera_tests::{CrmProxy, Fixture};
use tokio_postgres::Client;

/// Functions of the owner's that create a temporary object named `scratch` where no statement
/// text shows it (dynamic SQL, a SQL function, a procedure, one that first turns the proxy's
/// `maschera.pooled` off).
const MAKERS: &str = "
CREATE FUNCTION make_scratch_table() RETURNS int LANGUAGE plpgsql AS $$
BEGIN EXECUTE 'CREATE TE' || 'MP TABLE scratch AS SELECT 42 AS answer'; RETURN 1; END $$;
CREATE FUNCTION make_scratch_view() RETURNS void LANGUAGE sql
AS 'CREATE TEMPORARY VIEW scratch AS SELECT 42 AS answer';
CREATE PROCEDURE make_scratch_sequence() LANGUAGE plpgsql AS $$
BEGIN EXECUTE format('CREATE %s SEQUENCE scratch', 'TEMP'); END $$;
CREATE FUNCTION make_scratch_quietly() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('maschera.pooled', 'off', false);
  CREATE TEMP TABLE scratch AS SELECT 42 AS answer;
END $$;
";

/// The CRM with two DPO users (one pool: same login, no attributes) and the sales role, in
/// transaction mode on pools of one, the policy applied by the superuser, and the makers.
async fn crm_with_makers() -> CrmProxy {
    let crm = Fixture::crm(20)
        .users([
            ("dora", "dpo", &[][..]),
            ("sam", "sales", &[("region", "north")][..]),
        ])
        .config(|options| options.sections = pool_section(1, ""))
        .start()
        .await
        .expect("start the CRM");
    crm.owner().await.batch_execute(MAKERS).await.unwrap();
    crm
}

/// The number of rows of the temporary `scratch` as `client` sees it, or the failure's SQLSTATE.
async fn scratch(client: &Client) -> Result<i64, String> {
    match client.query_one("SELECT count(*) FROM scratch", &[]).await {
        Ok(row) => Ok(row.get(0)),
        Err(err) => Err(failure(&err).0),
    }
}

#[tokio::test]
async fn a_temporary_object_made_inside_a_function_pins_its_client_and_no_other_client_sees_it() {
    let crm = crm_with_makers().await;
    for (call, extended) in [
        ("SELECT make_scratch_table()", false),
        ("SELECT make_scratch_view()", true),
        ("CALL make_scratch_sequence()", false),
        ("SELECT make_scratch_quietly()", false),
    ] {
        let a = crm.through_proxy("dora").await;
        let b = crm.through_proxy("dora").await;
        if extended {
            a.query(call, &[]).await.unwrap();
        } else {
            a.simple_query(call).await.unwrap();
        }
        // a keeps its backend and its object.
        for _ in 0..2 {
            assert_eq!(scratch(&a).await, Ok(1), "{call}");
        }
        // b waits for the pool's one backend, which a keeps: never a's object (53300 ends b).
        assert_eq!(
            scratch(&b).await,
            Err("53300".into()),
            "{call}: b was served by a's backend"
        );
        // Once a is gone, its backend is closed with the object, never handed on.
        drop(a);
        let c = crm.through_proxy("dora").await;
        assert_eq!(scratch(&c).await, Err("42P01".into()), "{call}");
    }
    // The trigger's notice pins; the client never sees it (psql prints notices on stderr).
    let shown = maschera_tests::psql(
        &crm.uri("dora"),
        &["-v", "ON_ERROR_STOP=1", "-c", "SELECT make_scratch_table()"],
    );
    assert!(shown.ok, "{}", shown.stderr);
    assert!(
        !shown.stderr.contains("INFO") && !shown.stderr.contains("maschera"),
        "{}",
        shown.stderr
    );
    // The trigger runs for every login, a restricted one included (without the pooled setting it
    // does nothing; with it, it only notices).
    let sales = crm.straight("sales").await;
    sales
        .batch_execute("CREATE TEMP TABLE mine (a int); SET maschera.pooled = on; CREATE TEMP VIEW v AS SELECT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restricted_role_is_pinned_by_the_temporary_table_a_function_of_its_policy_makes() {
    let crm = Fixture::crm(20)
        .users([("sam", "sales", &[("region", "north")][..])])
        .policy(|text| {
            text.replacen(
                "[roles.sales]\n",
                "[roles.sales]\nfunctions = [\"public.make_scratch_table\"]\n",
                1,
            )
        })
        .config(|options| options.sections = pool_section(1, ""))
        .start()
        .await
        .expect("start the CRM");
    crm.owner().await.batch_execute(MAKERS).await.unwrap();
    let make = "SELECT public.make_scratch_table()";
    let a = crm.through_proxy("sam").await;
    let b = crm.through_proxy("sam").await;
    a.simple_query(make).await.unwrap();
    // b waits for the one backend, which a keeps (on it, b's call would fail with 42P07).
    let err = b.simple_query(make).await.unwrap_err();
    assert_eq!(
        failure(&err).0,
        "53300",
        "b was served by a's backend: {err}"
    );
    drop(a);
    // a's backend left with a: the next client makes its own table.
    let c = crm.through_proxy("sam").await;
    c.simple_query(make).await.unwrap();
}

#[tokio::test]
async fn a_do_block_pins_its_client_and_its_settings_stay_with_it() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let path = rows(&b, "SHOW search_path").await;
    a.simple_query("DO $$ BEGIN SET search_path = nowhere; SET statement_timeout = 1234; END $$")
        .await
        .unwrap();
    assert_eq!(rows(&a, "SHOW search_path").await, [["nowhere"]]);
    let err = b.simple_query("SHOW search_path").await.unwrap_err();
    assert_eq!(failure(&err).0, "53300", "b was served by a's backend");
    drop(a);
    let c = connect(&proxy).await;
    assert_eq!(rows(&c, "SHOW search_path").await, path);
    assert_eq!(rows(&c, "SHOW statement_timeout").await, [["0"]]);
}

#[tokio::test]
async fn a_reported_setting_a_function_changes_pins_its_client_and_a_local_one_does_not() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let zone = rows(&b, "SHOW TimeZone").await;
    let style = rows(&b, "SHOW DateStyle").await;
    a.batch_execute(
        "CREATE FUNCTION local_zone() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('TimeZone', 'Pacific/Chatham', true); END $$;
         CREATE FUNCTION set_zone() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN SET DateStyle = 'German'; PERFORM set_config('TimeZone', 'Pacific/Chatham', false); END $$",
    )
    .await
    .unwrap();
    // Local to its transaction: nothing stays, nothing pins.
    let pid = rows(&a, "SELECT pg_backend_pid()").await;
    a.batch_execute("BEGIN; SELECT local_zone(); COMMIT")
        .await
        .unwrap();
    assert_eq!(
        rows(&b, "SELECT pg_backend_pid()").await,
        pid,
        "a was pinned"
    );
    assert_eq!(rows(&b, "SHOW TimeZone").await, zone);
    // For the session: a keeps its backend and its settings; b never gets them.
    a.simple_query("SELECT set_zone()").await.unwrap();
    assert_eq!(rows(&a, "SHOW TimeZone").await, [["Pacific/Chatham"]]);
    let err = b.simple_query("SHOW TimeZone").await.unwrap_err();
    assert_eq!(failure(&err).0, "53300", "b was served by a's backend");
    drop(a);
    let c = connect(&proxy).await;
    assert_eq!(rows(&c, "SHOW TimeZone").await, zone);
    assert_eq!(rows(&c, "SHOW DateStyle").await, style);
}

#[tokio::test]
async fn set_config_local_ends_with_its_transaction_and_pins_nothing() {
    let (_pg, proxy) = pooled_proxy(1, "");
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let original = rows(&b, "SHOW TimeZone").await;
    let pid = rows(&a, "SELECT pg_backend_pid()").await;
    a.simple_query("SELECT set_config('TimeZone', 'Pacific/Chatham', true)")
        .await
        .unwrap();
    a.simple_query("BEGIN").await.unwrap();
    a.simple_query("SELECT set_config('search_path', 'nowhere', true)")
        .await
        .unwrap();
    assert_eq!(rows(&a, "SHOW search_path").await, [["nowhere"]]);
    a.simple_query("COMMIT").await.unwrap();
    // b is served by the same backend (a is not pinned) and sees neither setting.
    assert_eq!(rows(&b, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(rows(&b, "SHOW TimeZone").await, original);
    assert_ne!(rows(&b, "SHOW search_path").await, [["nowhere"]]);
    assert_eq!(rows(&a, "SHOW TimeZone").await, original);
}

#[tokio::test]
async fn sequelizes_settings_follow_their_client_and_typeorms_set_transaction_pins_nothing() {
    let (_pg, proxy) = pooled_proxy(1, "");
    // What Sequelize sends on connect: one Query of two SETs.
    const SEQUELIZE: &str =
        "SET client_min_messages TO warning;SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE;";
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let zone = rows(&b, "SHOW TimeZone").await;
    let messages = rows(&b, "SHOW client_min_messages").await;
    a.simple_query(SEQUELIZE).await.unwrap();
    for _ in 0..2 {
        assert_eq!(rows(&a, "SHOW TimeZone").await, [["<+05:30>-05:30"]]);
        assert_eq!(rows(&a, "SHOW client_min_messages").await, [["warning"]]);
        // b's pool of one is free (a is not pinned to its backend) and b has its own settings.
        assert_eq!(rows(&b, "SHOW TimeZone").await, zone);
        assert_eq!(rows(&b, "SHOW client_min_messages").await, messages);
    }
    // c joins a's pool (same settings); TypeORM's transaction('SERIALIZABLE') on a.
    let c = connect(&proxy).await;
    c.simple_query(SEQUELIZE).await.unwrap();
    for statement in [
        "START TRANSACTION",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        a.simple_query(statement).await.unwrap();
    }
    assert_eq!(
        rows(&a, "SHOW transaction_isolation").await,
        [["serializable"]]
    );
    a.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        rows(&a, "SHOW transaction_isolation").await,
        [["read committed"]]
    );
    // a is not pinned: c, waiting for the same pool of one, is served.
    assert_eq!(rows(&c, "SHOW TimeZone").await, [["<+05:30>-05:30"]]);
}

/// Whether the pooling event trigger is installed in the CRM database.
fn trigger_installed(pg: &maschera_tests::PgServer) -> bool {
    let out = pg
        .psql(
            CRM_DB,
            &[
                "-At",
                "-c",
                "SELECT count(*) FROM pg_event_trigger \
                 WHERE evtname = 'maschera_pooled_temporary_objects' AND evtenabled = 'A'",
            ],
        )
        .unwrap();
    out.trim() == "1"
}

#[tokio::test]
async fn policy_apply_without_a_superuser_says_the_trigger_is_missing_and_a_superusers_installs_it()
{
    let (pg, applied) = owned_crm("CREATEROLE", 20).await;
    let out = apply(&applied, &owner_uri(&pg));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("warning")
            && said.contains("maschera_pooled_temporary_objects is not installed")
            && said.contains("pool_mode = \"session\""),
        "{said}"
    );
    assert!(!trigger_installed(&pg));
    let out = apply(&applied, &pg.uri(CRM_DB));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("is not installed"), "{said}");
    assert!(trigger_installed(&pg));
    // The owner's next apply keeps it and says nothing.
    let out = apply(&applied, &owner_uri(&pg));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("is not installed"), "{said}");
    assert!(trigger_installed(&pg));
}
