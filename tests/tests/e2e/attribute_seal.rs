//! The database lock holds the caller's attributes: a role's login used straight (no proxy) sets
//! whatever setting it likes, and its row filters still read only the attribute values the proxy sealed
//! for it (`policy::attribute_seal`); with none that verifies it sees no rows, without an error. Also:
//! the proxy path unchanged, the key out of the login's reach, and the key's rotation with
//! `policy apply`.
//! Not for: the proxy's refusal of `SET maschera.*` (see `enforce`, `attack_round3`).

use maschera::admin::credentials::Credentials;
use maschera_tests::crm_proxy::{
    CRM_DB, CRM_PSEUDONYM_KEY, CrmUser, apply_policy, apply_policy_with,
};
use maschera_tests::seal::{key, region_options, sealed};
use maschera_tests::{CrmProxy, Fixture};
use tokio_postgres::{Client, SimpleQueryMessage};

const USERS: &[CrmUser] = &[
    ("sam", "sales", &[("region", "north")]),
    ("sue", "sales", &[("region", "south")]),
];

async fn start() -> CrmProxy {
    Fixture::crm(300)
        .users(USERS.iter().copied())
        .start()
        .await
        .expect("start the CRM proxy")
}

/// A connection straight to PostgreSQL as `role`'s login, with `options` (`-c ...`) at startup.
async fn straight(crm: &CrmProxy, role: &str, options: Option<&str>) -> Client {
    let credentials = Credentials::load(&crm.applied.credentials).expect("credentials");
    let login = credentials.login(role).expect("the role's login");
    let mut config: tokio_postgres::Config = crm
        .pg
        .uri_as(&login.user, &login.password, CRM_DB)
        .parse()
        .expect("uri");
    if let Some(options) = options {
        config.options(options);
    }
    connected(
        config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect"),
    )
}

fn connected(
    (client, connection): (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
) -> Client {
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The last value the simple query `sql` returns (it must succeed).
async fn last(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| panic!("`{sql}` returned no row"))
}

/// The contacts and deals the session sees, as `contacts/deals`.
async fn seen(client: &Client) -> String {
    format!(
        "{}/{}",
        last(client, "SELECT count(*) FROM contacts").await,
        last(client, "SELECT count(*) FROM deals").await
    )
}

fn owner_count(crm: &CrmProxy, region: &str) -> String {
    let sql = format!(
        "SELECT (SELECT count(*) FROM contacts WHERE region = '{region}') || '/' || \
         (SELECT count(*) FROM deals d JOIN contacts c ON c.id = d.contact_id WHERE c.region = '{region}')"
    );
    crm.pg
        .psql(CRM_DB, &["-c", &sql])
        .expect("owner count")
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_login_used_straight_sees_only_the_attributes_the_proxy_sealed() {
    let crm = start().await;
    let (north, south) = (owner_count(&crm, "north"), owner_count(&crm, "south"));
    assert_ne!(north, south);
    assert!(!north.starts_with("0/"), "{north}");
    let sales = "maschera_sales";
    let as_north = region_options(&crm.pg, CRM_DB, sales, "north");

    // Sealed as the proxy seals sam's: north, and the proxy path unchanged for each user.
    let login = straight(&crm, "sales", Some(&as_north)).await;
    assert_eq!(seen(&login).await, north);
    for (user, expected) in [("sam", &north), ("sue", &south)] {
        let proxied = connected(
            crm.uri(user)
                .parse::<tokio_postgres::Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
                .expect("through the proxy"),
        );
        assert_eq!(&seen(&proxied).await, expected, "{user} through the proxy");
    }

    // Whatever the session sets itself, no seal of it verifies: no rows, no error.
    let seal_of = |login: &str, value: &str| {
        sealed(&crm.pg, CRM_DB, login, "maschera.region", value)[1]
            .1
            .clone()
    };
    let north_seal = seal_of(sales, "north");
    let forgeries = [
        "SET maschera.region = 'south'".to_string(),
        "SET SESSION maschera.region TO south".to_string(),
        "SELECT set_config('maschera.region', 'south', false)".to_string(),
        "BEGIN; SELECT set_config('maschera.region', 'south', true)".to_string(),
        // A made-up seal, the north seal over another value, another login's seal of south (the
        // support login's, as a proxy would seal it), and a seal for another setting.
        format!(
            "SET maschera.region = 'south'; SET maschera.region.sig = '{}'",
            "0".repeat(96)
        ),
        format!("SET maschera.region = 'south'; SET maschera.region.sig = '{north_seal}'"),
        format!(
            "SET maschera.region = 'south'; SET maschera.region.sig = '{}'",
            seal_of("maschera_support", "south")
        ),
        format!(
            "SET maschera.region = 'south'; SET maschera.region.sig = '{}'",
            sealed(&crm.pg, CRM_DB, sales, "maschera.team", "south")[1].1
        ),
        // A seal the session reads back off its own settings, for a value it then sets.
        "SELECT set_config('maschera.region', 'south', false), set_config('maschera.region.sig', \
         current_setting('maschera.region.sig'), false)"
            .to_string(),
        "SET maschera.region.sig = 'not hex at all'".to_string(),
    ];
    for forgery in &forgeries {
        let login = straight(&crm, "sales", Some(&as_north)).await;
        login
            .simple_query(forgery)
            .await
            .unwrap_or_else(|e| panic!("`{forgery}`: {e:?}"));
        assert_eq!(seen(&login).await, "0/0", "after `{forgery}`");
    }

    // Without any attribute, and with one chosen at startup or as the login's own default.
    let login = straight(&crm, "sales", None).await;
    assert_eq!(seen(&login).await, "0/0", "no attribute");
    let chosen = straight(
        &crm,
        "sales",
        Some(&format!(
            "-c maschera.region=south -c maschera.region.sig={north_seal}"
        )),
    )
    .await;
    assert_eq!(seen(&chosen).await, "0/0", "startup options");
    // PostgreSQL 15 refuses a login its own default of a placeholder setting; were it granted (a
    // superuser's `GRANT SET`, or a role default the owner sets), it is only another unsealed value.
    if let Err(err) = login
        .batch_execute(&format!(
            "ALTER ROLE CURRENT_USER SET maschera.region = 'south'; \
             ALTER ROLE CURRENT_USER SET maschera.region.sig = '{north_seal}'"
        ))
        .await
    {
        assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    }
    crm.pg
        .psql(
            CRM_DB,
            &[
                "-c",
                &format!(
                    "ALTER ROLE {sales} SET maschera.region = 'south'; \
                     ALTER ROLE {sales} SET maschera.region.sig = '{north_seal}'"
                ),
            ],
        )
        .expect("role defaults");
    let defaulted = straight(&crm, "sales", None).await;
    assert_eq!(
        last(&defaulted, "SELECT current_setting('maschera.region')").await,
        "south"
    );
    assert_eq!(seen(&defaulted).await, "0/0", "ALTER ROLE ... SET");
    crm.pg
        .psql(
            CRM_DB,
            &[
                "-c",
                &format!(
                    "ALTER ROLE {sales} RESET maschera.region; ALTER ROLE {sales} RESET \"maschera.region.sig\""
                ),
            ],
        )
        .expect("reset the role defaults");

    // The key is the owner's: the login reads neither the table nor a seal of its own making.
    for sql in [
        "SELECT key FROM maschera_private.keys",
        "SELECT count(*) FROM maschera_private.keys WHERE name = 'attributes'",
    ] {
        let err = login.simple_query(sql).await.expect_err(sql);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{sql}: {err:?}"
        );
    }
    let definition = last(
        &login,
        "SELECT pg_get_functiondef('maschera_private.attribute(text)'::regprocedure)",
    )
    .await;
    let key_hex: String = key(&crm.pg, CRM_DB)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!definition.contains(&key_hex));
    assert!(definition.contains("SECURITY DEFINER"), "{definition}");
}

#[tokio::test]
async fn the_seal_key_stays_with_a_plain_apply_and_rotates_with_rotate_keeping_open_sessions_one_rotation()
 {
    let crm = start().await;
    let north = owner_count(&crm, "north");
    let before = key(&crm.pg, CRM_DB);
    let open = straight(
        &crm,
        "sales",
        Some(&region_options(&crm.pg, CRM_DB, "maschera_sales", "north")),
    )
    .await;
    assert_eq!(seen(&open).await, north);

    // A plain apply (a migration's re-apply, say) changes no seal: a running proxy goes on
    // sealing with the key it read at start.
    apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("apply again");
    assert_eq!(key(&crm.pg, CRM_DB), before, "a plain apply keeps the key");
    assert_eq!(seen(&open).await, north, "after a plain apply");

    let rotate = |what: &str| {
        apply_policy_with(
            &crm.pg,
            CRM_DB,
            &crm.applied,
            CRM_PSEUDONYM_KEY,
            &["--rotate"],
        )
        .expect(what)
    };
    rotate("apply --rotate");
    assert_ne!(key(&crm.pg, CRM_DB), before, "--rotate makes a new key");
    // Sealed with the key before: still valid until the next rotation.
    assert_eq!(seen(&open).await, north, "one rotation later");
    let fresh = straight(
        &crm,
        "sales",
        Some(&region_options(&crm.pg, CRM_DB, "maschera_sales", "north")),
    )
    .await;
    assert_eq!(seen(&fresh).await, north, "sealed with the new key");

    rotate("apply --rotate a second time");
    assert_eq!(seen(&open).await, "0/0", "two rotations later");
    assert_eq!(seen(&fresh).await, north, "one rotation later");
}

#[tokio::test]
async fn a_replaced_verifier_or_a_missing_key_refuses_the_roles_with_attributes() {
    let crm = start().await;
    let north = owner_count(&crm, "north");
    let sam = || async {
        let (client, connection) = tokio_postgres::connect(&crm.uri("sam"), tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                e.as_db_error().map_or(e.to_string(), |db| {
                    format!("{} {}", db.code().code(), db.message())
                })
            })?;
        tokio::spawn(connection);
        Ok::<String, String>(seen(&client).await)
    };
    assert_eq!(sam().await.expect("sam"), north);
    let check = || {
        let out = std::process::Command::new(maschera_tests::maschera_bin())
            .args(["policy", "check"])
            .arg(&crm.applied.policy)
            .args(["--upstream", &crm.pg.uri(CRM_DB)])
            .output()
            .expect("policy check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(check().0, "{}", check().1);
    let mut reloads = 0;
    for (migration, names) in [
        // A direct migration makes the verifier return the setting as it is.
        (
            "CREATE OR REPLACE FUNCTION maschera_private.attribute(setting text) RETURNS text \
             LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$ BEGIN \
             RETURN NULLIF(current_setting(setting, true), ''); END $$",
            "maschera_private.attribute(text)",
        ),
        // Or drops the key.
        (
            "DELETE FROM maschera_private.keys WHERE name LIKE 'attributes%'",
            "seal key",
        ),
    ] {
        crm.pg
            .psql(CRM_DB, &["-c", migration])
            .expect("the migration");
        let (ok, stderr) = check();
        assert!(!ok, "{migration}: {stderr}");
        assert!(
            stderr.contains("policy role sales are incomplete") && stderr.contains(names),
            "{stderr}"
        );
        crm.proxy.signal(libc::SIGHUP);
        reloads += 1;
        crm.proxy.wait_for_log("policy reloaded", reloads);
        let refused = sam().await.expect_err("sam is refused");
        assert!(
            refused.starts_with("42501 ") && refused.contains("maschera policy apply"),
            "{refused}"
        );
        apply_policy(&crm.pg, CRM_DB, &crm.applied, CRM_PSEUDONYM_KEY).expect("re-apply");
        crm.proxy.signal(libc::SIGHUP);
        reloads += 1;
        crm.proxy.wait_for_log("policy reloaded", reloads);
        assert_eq!(sam().await.expect("sam after the apply"), north);
        assert!(check().0, "{}", check().1);
    }
}
