//! Framework tables: the tables an application's framework keeps for itself (Django's `auth_*` and
//! `django_*`, Rails' `schema_migrations`, Laravel's (and TypeORM's) `migrations` and Laravel's
//! `password_resets`, Sequelize's `SequelizeMeta`, Hibernate's sequences, Alembic's, Flyway's and
//! Liquibase's version tables, Knex's), and the secret columns of any table (password hashes, session data and
//! keys, tokens). The application reads framework tables on every
//! request, so a proposed policy must let every role read them, and write the few it writes on ordinary
//! requests (sessions); other secrets are read by no restricted role.
//! Not for: personal data (see `names`, `detect`) or the rules themselves (see `template`).

use super::names::words;

/// Exact table names and the framework that owns them.
const TABLES: &[(&str, &str)] = &[
    ("schema_migrations", "Rails"),
    ("ar_internal_metadata", "Rails"),
    ("migrations", "Laravel or TypeORM"),
    ("password_resets", "Laravel"),
    ("password_reset_tokens", "Laravel"),
    ("failed_jobs", "Laravel"),
    ("personal_access_tokens", "Laravel"),
    ("job_batches", "Laravel"),
    ("cache_locks", "Laravel"),
    ("sessions", "Laravel"),
    ("hibernate_sequence", "Hibernate"),
    ("hibernate_sequences", "Hibernate"),
    ("alembic_version", "Alembic"),
    ("flyway_schema_history", "Flyway"),
    ("schema_version", "Flyway"),
    ("databasechangelog", "Liquibase"),
    ("databasechangeloglock", "Liquibase"),
    ("authtoken_token", "Django REST framework"),
    ("SequelizeMeta", "Sequelize"),
    ("SequelizeData", "Sequelize"),
    ("typeorm_metadata", "TypeORM"),
    ("knex_migrations", "Knex"),
    ("knex_migrations_lock", "Knex"),
];

/// Migration tools' bookkeeping tables: the tool asks the catalog whether the table exists before it
/// reads it (Alembic's and SQLAlchemy's `has_table`, Django's `MigrationRecorder.has_table`, Knex's
/// `hasTable`), as an application that migrates on every start does under its restricted account
/// too. A table left to `unlisted_tables` is not on the role login's search path, so the catalog
/// says it is missing and the tool tries to create it (refused: DDL); a declared table is a view in
/// the role's schema and is found.
const LOOKED_UP: &[&str] = &[
    "alembic_version",
    "django_migrations",
    "schema_migrations",
    "ar_internal_metadata",
    "migrations",
    "SequelizeMeta",
    "SequelizeData",
    "flyway_schema_history",
    "schema_version",
    "databasechangelog",
    "databasechangeloglock",
    "typeorm_metadata",
    "knex_migrations",
    "knex_migrations_lock",
];

/// Whether `table` is a migration tool's bookkeeping table, which the tool looks up in the catalog:
/// a draft declares it (`default = "read"`) rather than leaving it to `unlisted_tables`.
pub fn looked_up_in_catalog(table: &str) -> bool {
    LOOKED_UP.contains(&table)
}

/// Table name prefixes and the framework that owns them.
const PREFIXES: &[(&str, &str)] = &[("django_", "Django"), ("auth_", "Django")];

/// The framework that owns `table`, if its name is one of a framework's own tables.
pub fn framework_of(table: &str) -> Option<&'static str> {
    TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .or_else(|| {
            PREFIXES
                .iter()
                .find(|(prefix, _)| table.starts_with(prefix))
        })
        .map(|(_, framework)| *framework)
}

/// Framework tables the application itself writes on ordinary requests (a login writes its session),
/// and the writes it needs: a proposed policy lets every restricted role make them, and read the table's
/// secrets (the application looks sessions up by their key), or the application stops working.
const WRITTEN: &[(&str, &[&str])] = &[
    ("django_session", &["insert", "update", "delete"]),
    ("sessions", &["insert", "update", "delete"]),
    ("cache_locks", &["insert", "update", "delete"]),
    ("job_batches", &["insert", "update", "delete"]),
    ("failed_jobs", &["insert"]),
    ("hibernate_sequence", &["insert", "update"]),
    ("hibernate_sequences", &["insert", "update"]),
];

/// The writes the application makes to `table` on ordinary requests, if it is one of the framework
/// tables it writes (sessions, locks, sequence tables).
pub fn written(table: &str) -> Option<&'static [&'static str]> {
    WRITTEN
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, writes)| *writes)
}

/// Columns that are secrets in one framework table: session keys are bearer credentials.
const TABLE_SECRETS: &[(&str, &str)] = &[
    ("django_session", "session_key"),
    ("django_session", "session_data"),
    ("authtoken_token", "key"),
    ("sessions", "id"),
    ("sessions", "payload"),
];

/// Words that make a column a secret in any table.
const SECRET_WORDS: &[&str] = &[
    "password", "passwd", "pwd", "secret", "token", "salt", "otp", "totp", "apikey",
];

/// Why `column` (of type `type_name`) of `table` is a secret that no restricted role should read, if it
/// is one. A boolean, a number or a date is never a secret (`password_reset_required`).
pub fn secret(table: &str, column: &str, type_name: &str) -> Option<&'static str> {
    use policy::action::{TypeFamily, type_family};
    if type_name == "boolean"
        || matches!(
            type_family(type_name),
            TypeFamily::Number | TypeFamily::Date | TypeFamily::Timestamp
        )
    {
        return None;
    }
    if TABLE_SECRETS.contains(&(table, column)) {
        return Some("session data or key of the framework");
    }
    let words = words(column);
    let has = |w: &str| words.iter().any(|x| x == w);
    if SECRET_WORDS.iter().any(|w| has(w)) || (has("api") && has("key")) {
        // `password_changed_at`, `token_expires` are dates about the secret, not the secret.
        let about = [
            "at", "date", "expires", "expiry", "changed", "count", "type",
        ];
        if !about.iter().any(|w| has(w)) {
            return Some("a secret (password hash, token or key)");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_tables() {
        assert_eq!(framework_of("django_session"), Some("Django"));
        assert_eq!(framework_of("auth_user"), Some("Django"));
        assert_eq!(framework_of("schema_migrations"), Some("Rails"));
        assert_eq!(framework_of("alembic_version"), Some("Alembic"));
        assert_eq!(framework_of("databasechangeloglock"), Some("Liquibase"));
        assert_eq!(framework_of("SequelizeMeta"), Some("Sequelize"));
        assert_eq!(framework_of("typeorm_metadata"), Some("TypeORM"));
        assert_eq!(framework_of("knex_migrations"), Some("Knex"));
        assert_eq!(framework_of("contacts"), None);
        assert!(looked_up_in_catalog("alembic_version"));
        assert!(!looked_up_in_catalog("django_content_type"));
        assert_eq!(framework_of("author"), None);
        assert_eq!(
            written("django_session"),
            Some(&["insert", "update", "delete"][..])
        );
        assert_eq!(
            written("auth_user"),
            None,
            "the login's writes are not the role's"
        );
    }

    #[test]
    fn secrets() {
        for (table, column, type_name, is_secret) in [
            ("auth_user", "password", "character varying(128)", true),
            ("users", "encrypted_password", "text", true),
            ("users", "passwordHash", "text", true),
            ("users", "password_digest", "text", true),
            ("api_clients", "api_key", "text", true),
            ("django_session", "session_data", "text", true),
            (
                "django_session",
                "session_key",
                "character varying(40)",
                true,
            ),
            ("users", "digest_frequency", "text", false),
            ("users", "password_changed_at", "text", false),
            ("users", "password_reset_required", "boolean", false),
            ("users", "token_version", "integer", false),
            ("users", "email", "text", false),
            (
                "django_session",
                "expire_date",
                "timestamp with time zone",
                false,
            ),
        ] {
            assert_eq!(
                secret(table, column, type_name).is_some(),
                is_secret,
                "{table}.{column}"
            );
        }
    }
}
