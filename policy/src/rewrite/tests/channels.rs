//! LISTEN, UNLISTEN, NOTIFY and pg_notify only on the channels the policy gives the role.

use super::*;

fn with_channels(role: &str, channels: &[&str]) -> crate::access::RoleAccess {
    let mut access = fixture::role(role);
    access.channels = channels.iter().map(|c| c.to_string()).collect();
    access
}

fn decide(access: &crate::access::RoleAccess, sql: &str) -> Result<Rewritten, Refusal> {
    rewrite(sql, access, &fixture::catalog())
}

#[test]
fn no_channel_is_allowed_by_default() {
    for (sql, channel) in [
        ("LISTEN ch", "\"ch\""),
        ("UNLISTEN ch", "\"ch\""),
        ("NOTIFY ch", "\"ch\""),
        ("NOTIFY \"Orders\", 'x'", "\"Orders\""),
    ] {
        refused("sales", sql, SqlState::InsufficientPrivilege, channel);
    }
    refused(
        "sales",
        &format!("SELECT pg_notify('ch', '{SECRET}')"),
        SqlState::InsufficientPrivilege,
        "channel",
    );
    // UNLISTEN * only stops the session's own listening.
    accepted("sales", "UNLISTEN *");
    accepted("marketing", "UNLISTEN *");
}

#[test]
fn the_policys_channels_are_allowed_as_postgresql_folds_them() {
    let access = with_channels("sales", &["orders", "Mixed"]);
    for sql in [
        "LISTEN orders",
        "LISTEN ORDERS",
        "LISTEN \"orders\"",
        "UNLISTEN orders",
        "NOTIFY orders, 'x'",
        "LISTEN \"Mixed\"",
        "SELECT pg_notify('orders', 'x')",
        "SELECT pg_catalog.pg_notify('Mixed', 'x')",
    ] {
        decide(&access, sql).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
    }
    for sql in [
        "LISTEN Mixed",
        "LISTEN other",
        "NOTIFY \"ORDERS\"",
        "SELECT pg_notify('ORDERS', 'x')",
        "SELECT pg_notify('other', 'x')",
        "SELECT pg_notify(lower('ORDERS'), 'x')",
        "SELECT pg_notify(city, 'x') FROM contacts",
    ] {
        let refusal = decide(&access, sql).expect_err(sql);
        assert_eq!(refusal.sqlstate, SqlState::InsufficientPrivilege, "{sql}");
    }
    // Another role's channels are not this one's.
    assert!(decide(&with_channels("marketing", &[]), "LISTEN orders").is_err());
}

#[test]
fn channel_names_are_validated() {
    assert!(channel_name_problem("orders").is_none());
    assert!(channel_name_problem("").is_some());
    assert!(channel_name_problem("*").is_some());
    assert!(channel_name_problem(&"x".repeat(64)).is_some());
    assert!(channel_name_problem(&"x".repeat(63)).is_none());
}

#[test]
fn the_policy_file_lists_channels_per_role_and_check_names_the_bad_one() {
    let base = "[tables.contacts.columns]\nemail = \"contact\"\n[roles.dpo]\nunrestricted = true\n";
    let policy = crate::Policy::parse(
        "p.toml",
        &format!("{base}[roles.sales]\nchannels = [\"orders\", \"Mixed\"]\n[roles.support]\n"),
    )
    .expect("channels parse");
    assert_eq!(policy.roles["sales"].channels, ["orders", "Mixed"]);
    assert!(
        policy.roles["support"].channels.is_empty(),
        "none by default"
    );
    let compiled = policy
        .role_access_by_name("sales", &fixture::catalog())
        .expect("sales compiles");
    assert!(compiled.channels.contains("Mixed"));
    for (bad, says) in [
        ("channels = [\"\"]", "must not be empty"),
        ("channels = [\"a\", \"a\"]", "listed twice"),
        ("channels = [\"*\"]", "UNLISTEN *"),
    ] {
        let errors = crate::Policy::parse("p.toml", &format!("{base}[roles.sales]\n{bad}\n"))
            .expect_err(bad)
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 6, "{bad}: the line of the role's channels");
        assert!(
            errors[0].message.contains(says),
            "{bad}: {}",
            errors[0].message
        );
    }
    let errors = crate::Policy::parse(
        "p.toml",
        "[roles.dpo]\nunrestricted = true\nchannels = [\"x\"]\n",
    )
    .expect_err("unrestricted takes no channels")
    .0;
    assert!(errors[0].message.contains("unrestricted"), "{errors:?}");
}
