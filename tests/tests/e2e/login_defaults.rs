//! A restricted role's login altered straight on PostgreSQL (`ALTER ROLE CURRENT_USER SET ...`, which
//! any login may run for itself) does not change the proxy's sessions of that role: the proxy sends the
//! settings its reading of statements depends on, and every attribute the role's filters read (empty
//! when the user has none; PostgreSQL 15 lets only a superuser give a login a default for them), in
//! the startup packet of each session, where they override the login's defaults.
//! Not for: what a client may set in its own startup packet (see `enforce`).

use maschera_tests::Fixture;
use tokio_postgres::Client;

async fn regions(client: &Client) -> Vec<String> {
    client
        .query("SELECT DISTINCT region FROM contacts ORDER BY 1", &[])
        .await
        .expect("contacts through the proxy")
        .iter()
        .map(|row| row.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_a_login_gave_itself_do_not_reach_the_proxys_sessions() {
    let crm = Fixture::crm(300)
        .user(("nora", "sales", &[]))
        .start()
        .await
        .expect("start the CRM");
    let straight = crm.straight("sales").await;
    straight
        .batch_execute(
            "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off; \
             ALTER ROLE CURRENT_USER SET search_path = public; \
             ALTER ROLE CURRENT_USER SET row_security = off",
        )
        .await
        .expect("a login may alter its own defaults");

    let sam = crm.through_proxy("sam").await;
    assert_eq!(regions(&sam).await, ["north"], "sam keeps the north");
    // Read with standard_conforming_strings off, this would be a literal, a SET and a comment.
    let smuggled = sam
        .simple_query("SELECT 'a\\', ' AS x; SET maschera.region TO south; SELECT 1 --'")
        .await;
    if let Err(err) = &smuggled {
        let code = err.code().map(|c| c.code().to_string());
        assert!(
            matches!(code.as_deref(), Some("42501" | "0A000" | "42601")),
            "{err:?}"
        );
    }
    assert_eq!(regions(&sam).await, ["north"], "no SET reached PostgreSQL");

    let nora = crm.through_proxy("nora").await;
    assert_eq!(
        regions(&nora).await,
        Vec::<String>::new(),
        "a sales user without a region sees no contacts, whatever the login's default"
    );
}
