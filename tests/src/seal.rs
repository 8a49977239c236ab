//! Straight connections as a role's login that carry the attributes the way the proxy sends them: each
//! attribute setting with its seal (`policy::attribute_seal`), computed here from the key `policy apply`
//! stored (read as the superuser). Without the seal the database lock reads no attribute (no rows).
//! Not for: attacks on the seal (the e2e tests forge and replay seals themselves).

use crate::pg::PgServer;

/// The seal key `policy apply` stored in database `db`.
pub fn key(pg: &PgServer, db: &str) -> Vec<u8> {
    let hex = pg
        .psql(
            db,
            &[
                "-c",
                "SELECT encode(key, 'hex') FROM maschera_private.keys WHERE name = 'attributes'",
            ],
        )
        .expect("read the attributes' seal key");
    let hex = hex.trim();
    assert_eq!(
        hex.len() % 2,
        0,
        "no seal key in {db}: has `policy apply` run?"
    );
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `setting = value` and its seal for sessions of `login`, as `(name, value)` settings.
pub fn sealed(
    pg: &PgServer,
    db: &str,
    login: &str,
    setting: &str,
    value: &str,
) -> [(String, String); 2] {
    let seal = policy::attribute_seal::seal(&key(pg, db), login, setting, value);
    [
        (setting.to_string(), value.to_string()),
        (policy::attribute_seal::seal_setting(setting), seal),
    ]
}

/// `-c` options (for `options` or `PGOPTIONS`) that give `login`'s session the region `region`.
pub fn region_options(pg: &PgServer, db: &str, login: &str, region: &str) -> String {
    sealed(pg, db, login, "maschera.region", region)
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `SET` statements that give `login`'s session the region `region`.
pub fn region_sets(pg: &PgServer, db: &str, login: &str, region: &str) -> String {
    sealed(pg, db, login, "maschera.region", region)
        .iter()
        .map(|(name, value)| format!("SET {name} = '{value}'; "))
        .collect()
}
