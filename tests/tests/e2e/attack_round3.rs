//! Attack round 3: the statement shapes that could read or move a row outside a restricted role's row
//! filter, or show a hidden or masked value, tried as each restricted role of the reference CRM
//! (sales, marketing, support, analyst) through the proxy in both protocols **and** straight against
//! PostgreSQL as the role's login, where the database lock must hold alone. One test per class; each
//! asserts what the attacker sees: a refusal with its SQLSTATE, or only the cells the matrix allows,
//! and never a hidden value (read from PostgreSQL as the owner) in a row, an error, a notice or a COPY
//! stream. An attack that still succeeds is kept as an `#[ignore]`d test whose reason says what leaks.
//! Not for: the rewriter's decisions one by one (policy's unit tests) or the shapes the earlier rounds
//! cover (`enforce.rs`'s bypass corpus, `row_oracles.rs`'s upserts and error scrubbing, `dblock.rs`).

use crate::enforce::{Outcome, Session, assert_clean, outcome_text};
use maschera::admin::credentials::Credentials;
use maschera_tests::crm_proxy::{CRM_DB, CRM_PSEUDONYM_KEY, CrmUser, apply_policy};
use maschera_tests::{CrmProxy, Fixture};
use std::collections::BTreeMap;
use tokio_postgres::SimpleQueryMessage;

/// One user per restricted role (sam is sales in the north) and the dpo.
const USERS: &[CrmUser] = &[
    ("dora", "dpo", &[]),
    ("sam", "sales", &[("region", "north")]),
    ("mia", "marketing", &[]),
    ("tom", "support", &[]),
    ("ana", "analyst", &[]),
];

/// The restricted roles of the reference policy.
const ROLES: &[&str] = &["sales", "marketing", "support", "analyst"];

/// Where an attack is sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Through the proxy, simple protocol.
    Simple,
    /// Through the proxy, extended protocol (Parse/Bind/Execute).
    Extended,
    /// Straight to PostgreSQL as the role's login (sales with the region the proxy would set).
    Straight,
}

pub(crate) const EVERY_PATH: &[Path] = &[Path::Simple, Path::Extended, Path::Straight];
pub(crate) const THROUGH_PROXY: &[Path] = &[Path::Simple, Path::Extended];
pub(crate) const STRAIGHT: &[Path] = &[Path::Straight];

fn user_of(role: &str) -> &'static str {
    USERS
        .iter()
        .find(|u| u.1 == role)
        .map(|u| u.0)
        .unwrap_or_else(|| panic!("no user of role {role}"))
}

/// The values `role` must never see, read as the owner: unique contact data outside its filter or
/// masked for it, full tax codes and birth dates (the roles that see them see the year only; a date
/// that is a 1 January is left out), and the pseudonym key.
async fn hidden_values(crm: &CrmProxy, role: &str) -> Vec<String> {
    let dates = "SELECT birth_date::text FROM contacts WHERE birth_date IS NOT NULL \
                 AND extract(doy FROM birth_date) > 1";
    let sql = match role {
        "sales" => format!(
            "SELECT email, phone FROM contacts WHERE region <> 'north'; \
             SELECT tax_code FROM contacts WHERE tax_code IS NOT NULL; {dates}"
        ),
        "marketing" => format!(
            "SELECT phone FROM contacts; SELECT tax_code FROM contacts WHERE tax_code IS NOT NULL; \
             SELECT email FROM contacts WHERE id NOT IN (SELECT contact_id FROM consents \
             WHERE purpose = 'marketing' AND withdrawn_at IS NULL); {dates}"
        ),
        "support" | "analyst" => format!(
            "SELECT email, phone FROM contacts; \
             SELECT tax_code FROM contacts WHERE tax_code IS NOT NULL; {dates}"
        ),
        other => panic!("no hidden values for {other}"),
    };
    let mut values = owner_values(crm, &sql).await;
    values.push(CRM_PSEUDONYM_KEY.to_owned());
    values
}

/// Every value of `sql` run as the owner, as text.
async fn owner_values(crm: &CrmProxy, sql: &str) -> Vec<String> {
    let owner = crm.owner().await;
    let mut out = Vec::new();
    for message in owner.simple_query(sql).await.expect(sql) {
        if let SimpleQueryMessage::Row(row) = message {
            out.extend((0..row.len()).filter_map(|i| row.get(i).map(str::to_owned)));
        }
    }
    out
}

/// The reference CRM (300 generated contacts) behind the proxy, with the values each role must not see.
pub(crate) struct Round {
    pub(crate) crm: CrmProxy,
    hidden: BTreeMap<&'static str, Vec<String>>,
}

impl Round {
    pub(crate) async fn start() -> Round {
        Self::start_from(Fixture::crm(300)).await
    }

    /// [`Round::start`] with fresh statistics (`ANALYZE`), so that `pg_stats` holds values.
    pub(crate) async fn analyzed() -> Round {
        let round = Self::start().await;
        let owner = round.crm.owner().await;
        owner.batch_execute("ANALYZE").await.expect("ANALYZE");
        round
    }

    pub(crate) async fn start_from(fixture: Fixture) -> Round {
        let crm = fixture
            .users(USERS.iter().copied())
            .start()
            .await
            .expect("start the CRM proxy");
        let mut hidden = BTreeMap::new();
        for role in ROLES {
            hidden.insert(*role, hidden_values(&crm, role).await);
        }
        Round { crm, hidden }
    }

    /// `maschera policy apply` of the round's policy file as it is now (the repair after an attack,
    /// or an edited policy).
    pub(crate) fn apply_again(&self) -> anyhow::Result<()> {
        apply_policy(&self.crm.pg, CRM_DB, &self.crm.applied, CRM_PSEUDONYM_KEY)
    }

    /// `maschera policy check --upstream` of the round's policy file against its database.
    pub(crate) fn policy_check(&self) -> std::process::Output {
        maschera_tests::run_maschera([
            "policy".to_string(),
            "check".into(),
            self.crm.applied.policy.display().to_string(),
            "--upstream".into(),
            self.crm.pg.uri(CRM_DB),
        ])
    }

    /// The connection URI of `role`'s own login, straight to PostgreSQL.
    pub(crate) fn login_uri(&self, role: &str) -> String {
        let credentials = Credentials::load(&self.crm.applied.credentials).expect("credentials");
        let login = credentials.login(role).expect("the role's login");
        self.crm.pg.uri_as(&login.user, &login.password, CRM_DB)
    }

    /// A fresh session of `role` on `path`.
    pub(crate) async fn session(&self, role: &str, path: Path) -> Session {
        match path {
            Path::Straight => {
                let session = Session::connect(&self.login_uri(role)).await;
                if role == "sales" {
                    // What the proxy sends as startup parameters for sam.
                    let sets = maschera_tests::seal::region_sets(
                        &self.crm.pg,
                        CRM_DB,
                        "maschera_sales",
                        "north",
                    );
                    session.simple(&sets).await.ok();
                }
                session
            }
            Path::Simple | Path::Extended => Session::connect(&self.crm.uri(user_of(role))).await,
        }
    }

    /// Runs `sql` as `role` in `session` (opened on `path`) and asserts that nothing it showed (rows,
    /// error fields, notices so far) holds a value hidden from the role.
    pub(crate) async fn attack_in(
        &self,
        session: &Session,
        role: &str,
        path: Path,
        sql: &str,
    ) -> Outcome {
        let outcome = session.run(path == Path::Extended, sql).await;
        let context = format!("{role} {path:?} `{sql}`");
        let hidden = &self.hidden[role];
        assert_clean(&context, sql, &outcome_text(&outcome), hidden);
        assert_clean(&context, sql, &session.notices(), hidden);
        outcome
    }

    /// [`Round::attack_in`] in a fresh session, on each of `paths`.
    pub(crate) async fn attack(
        &self,
        role: &str,
        paths: &[Path],
        sql: &str,
    ) -> Vec<(Path, Outcome)> {
        let mut out = Vec::new();
        for &path in paths {
            let session = self.session(role, path).await;
            out.push((path, self.attack_in(&session, role, path, sql).await));
        }
        out
    }

    /// Asserts that `sql` is refused on each of `paths` with one of `codes`.
    pub(crate) async fn refused(&self, role: &str, paths: &[Path], sql: &str, codes: &[&str]) {
        for (path, outcome) in self.attack(role, paths, sql).await {
            let code = outcome.error.as_ref().map(|e| e.0.as_str());
            assert!(
                code.is_some_and(|c| codes.contains(&c)),
                "{role} {path:?} `{sql}`: expected one of {codes:?}, got {outcome:?}"
            );
        }
    }

    /// Asserts that `sql` succeeds on each of `paths` and returns the rows of each.
    pub(crate) async fn rows(
        &self,
        role: &str,
        paths: &[Path],
        sql: &str,
    ) -> Vec<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for (path, outcome) in self.attack(role, paths, sql).await {
            assert!(
                outcome.error.is_none(),
                "{role} {path:?} `{sql}`: {outcome:?}"
            );
            out.push(outcome.rows);
        }
        out
    }

    /// Asserts that `sql` succeeds on each of `paths` with exactly `expected` as its first column.
    pub(crate) async fn column(&self, role: &str, paths: &[Path], sql: &str, expected: &[String]) {
        for (path, rows) in paths.iter().zip(self.rows(role, paths, sql).await) {
            let got: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
            assert_eq!(got, expected, "{role} {path:?} `{sql}`");
        }
    }

    pub(crate) async fn owner_value(&self, sql: &str) -> String {
        owner_values(&self.crm, sql)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{sql}: no value"))
    }

    pub(crate) async fn owner_values(&self, sql: &str) -> Vec<String> {
        owner_values(&self.crm, sql).await
    }

    /// A digest of every row sam's filter hides, of every table no restricted role may write, and of
    /// the consents marketing's filter reads.
    async fn outside(&self) -> Vec<String> {
        let child = |table: &str| {
            format!(
                "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM {table} t \
                 JOIN contacts c ON c.id = t.contact_id WHERE c.region <> 'north';"
            )
        };
        let mut sql = String::from(
            "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM contacts t WHERE region <> 'north';
             SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM consents t;
             SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM health_records t;
             SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM judicial_records t;",
        );
        for table in ["deals", "interactions", "tickets"] {
            sql.push_str(&child(table));
        }
        self.owner_values(&sql).await
    }

    /// The ids of the first contact of `region`, of a deal and of an interaction of it.
    pub(crate) async fn contact_of(&self, region: &str) -> Contact {
        let id = self
            .owner_value(&format!(
                "SELECT c.id FROM contacts c WHERE region = '{region}' \
                 AND EXISTS (SELECT 1 FROM deals d WHERE d.contact_id = c.id) \
                 AND EXISTS (SELECT 1 FROM interactions i WHERE i.contact_id = c.id) \
                 AND tax_code IS NOT NULL AND extract(doy FROM birth_date) > 1 ORDER BY id LIMIT 1"
            ))
            .await;
        Contact {
            deal: self
                .owner_value(&format!(
                    "SELECT min(id) FROM deals WHERE contact_id = {id}"
                ))
                .await,
            note: self
                .owner_value(&format!(
                    "SELECT min(id) FROM interactions WHERE contact_id = {id}"
                ))
                .await,
            email: self
                .owner_value(&format!("SELECT email FROM contacts WHERE id = {id}"))
                .await,
            id,
        }
    }
}

/// A contact and ids of its rows, as the owner reads them.
pub(crate) struct Contact {
    pub(crate) id: String,
    pub(crate) deal: String,
    pub(crate) note: String,
    pub(crate) email: String,
}

fn code(outcome: &Outcome) -> &str {
    outcome.error.as_ref().map(|e| e.0.as_str()).unwrap_or("ok")
}

#[tokio::test]
async fn merge_is_refused_through_the_proxy_and_cannot_run_on_the_views_straight() {
    let round = Round::start().await;
    let south = round.contact_of("south").await;
    let before = round.outside().await;
    let merges = [
        format!(
            "MERGE INTO contacts c USING (SELECT {}::bigint AS id) s ON c.id = s.id \
             WHEN MATCHED THEN UPDATE SET city = 'merged'",
            south.id
        ),
        "MERGE INTO contacts c USING (SELECT 1 AS x) s ON true WHEN MATCHED THEN DELETE".to_owned(),
        format!(
            "MERGE INTO deals d USING (SELECT {}::bigint AS cid) s ON d.contact_id = s.cid \
             WHEN MATCHED THEN UPDATE SET stage = 'merged' \
             WHEN NOT MATCHED THEN INSERT (contact_id, amount, stage) VALUES (s.cid, 1, 'x')",
            south.id
        ),
        "MERGE INTO consents k USING (SELECT 1 AS x) s ON true \
         WHEN MATCHED THEN UPDATE SET withdrawn_at = NULL"
            .to_owned(),
    ];
    for role in ROLES {
        for sql in &merges {
            round
                .refused(role, THROUGH_PROXY, sql, &["0A000", "42501"])
                .await;
            // PostgreSQL 15 cannot MERGE into a view (0A000), or the login may not write it (42501).
            round
                .refused(role, STRAIGHT, sql, &["0A000", "42501", "42809", "42P01"])
                .await;
        }
    }
    assert_eq!(
        round.outside().await,
        before,
        "a MERGE changed a hidden row"
    );
}

#[tokio::test]
async fn writable_ctes_and_joined_writes_reach_no_row_outside_the_filter() {
    let round = Round::start().await;
    let south = round.contact_of("south").await;
    let own = round.contact_of("north").await;
    let before = round.outside().await;
    // Statements that aim at rows outside sam's filter: nothing comes back, nothing changes.
    let none = [
        format!(
            "WITH x AS (UPDATE contacts SET city = city WHERE id = {} RETURNING email, tax_code) SELECT * FROM x",
            south.id
        ),
        format!(
            "WITH x AS (DELETE FROM deals WHERE contact_id = {} RETURNING *) SELECT * FROM x",
            south.id
        ),
        format!(
            "WITH x AS (UPDATE interactions SET notes = 'x' WHERE id = {} RETURNING notes), \
             y AS (DELETE FROM deals WHERE id = {} RETURNING stage) SELECT * FROM x, y",
            south.note, south.deal
        ),
        format!(
            "UPDATE deals SET stage = c.email FROM contacts c WHERE c.id = {} RETURNING deals.stage",
            south.id
        ),
        "UPDATE deals SET stage = stage FROM contacts c WHERE c.id = deals.contact_id \
         AND c.region = 'south' RETURNING c.email, c.tax_code"
            .to_owned(),
        format!(
            "DELETE FROM interactions USING contacts c \
             WHERE c.id = interactions.contact_id AND c.id = {} RETURNING c.email, interactions.notes",
            south.id
        ),
        format!(
            "UPDATE interactions SET notes = notes FROM deals d \
             WHERE d.contact_id = interactions.contact_id AND d.id = {} RETURNING *",
            south.deal
        ),
        "INSERT INTO interactions (contact_id, channel, notes) \
         SELECT id, 'call', email FROM contacts WHERE region = 'south' RETURNING *"
            .to_owned(),
        format!(
            "WITH moved AS (UPDATE deals SET contact_id = {} WHERE id = {} RETURNING *) SELECT * FROM moved",
            own.id, south.deal
        ),
    ];
    for sql in &none {
        for rows in round.rows("sales", EVERY_PATH, sql).await {
            assert!(rows.is_empty(), "`{sql}` returned {rows:?}");
        }
    }
    // Statements on its own rows that copy other rows' values: only what sam sees is copied, masked.
    for sql in [
        format!(
            "WITH x AS (UPDATE contacts SET city = city WHERE id = {} RETURNING tax_code, birth_date) SELECT * FROM x",
            own.id
        ),
        format!(
            "UPDATE interactions SET notes = (SELECT string_agg(email || tax_code, ',') FROM contacts) \
             WHERE id = {} RETURNING notes",
            own.note
        ),
        format!(
            "INSERT INTO interactions (contact_id, channel, notes) \
             SELECT {}, 'call', string_agg(tax_code || birth_date::text, ',') FROM contacts RETURNING notes",
            own.id
        ),
        format!(
            "WITH x AS (SELECT max(email) AS m FROM contacts) \
             UPDATE deals SET stage = x.m FROM x WHERE deals.id = {} RETURNING deals.stage",
            own.deal
        ),
    ] {
        for rows in round.rows("sales", EVERY_PATH, &sql).await {
            assert!(!rows.is_empty(), "`{sql}` returned no row");
        }
    }
    // Moving a row out of the filter, or writing into it from outside, is refused by the database.
    for sql in [
        format!(
            "INSERT INTO deals (contact_id, amount, stage) SELECT {}, 1, 'x'",
            south.id
        ),
        format!(
            "WITH x AS (UPDATE deals SET contact_id = {} WHERE id = {} RETURNING *) SELECT * FROM x",
            south.id, own.deal
        ),
        format!(
            "WITH x AS (UPDATE contacts SET region = 'south' WHERE id = {} RETURNING *) SELECT * FROM x",
            own.id
        ),
    ] {
        round.refused("sales", EVERY_PATH, &sql, &["42501"]).await;
    }
    // Marketing and the analyst write nothing, in any form.
    for role in ["marketing", "analyst"] {
        for sql in [
            "WITH x AS (UPDATE contacts SET city = city RETURNING *) SELECT * FROM x",
            "WITH x AS (DELETE FROM interactions RETURNING *) SELECT count(*) FROM x",
            "UPDATE consents SET withdrawn_at = NULL FROM contacts c WHERE c.id = consents.contact_id",
        ] {
            round.refused(role, EVERY_PATH, sql, &["42501"]).await;
        }
    }
    assert_eq!(
        round.outside().await,
        before,
        "a write reached a row outside the filter"
    );
    // Support (no row filter: it writes rows of any region) reads masked and redacted text only,
    // whatever the write around it.
    for sql in [
        "WITH t AS (UPDATE tickets SET status = status RETURNING subject, body) SELECT * FROM t",
        "UPDATE tickets SET status = status FROM contacts c WHERE c.id = tickets.contact_id \
         RETURNING c.email, c.phone, c.last_name, tickets.body",
        "WITH x AS (INSERT INTO interactions (contact_id, channel, notes) \
         SELECT id, 'call', email || ' ' || phone FROM contacts ORDER BY id LIMIT 5 RETURNING notes) SELECT * FROM x",
    ] {
        round.rows("support", EVERY_PATH, sql).await;
    }
}

#[tokio::test]
async fn upserts_and_returning_show_only_the_roles_cells_and_revive_nothing() {
    let round = Round::start().await;
    let south = round.contact_of("south").await;
    let own = round.contact_of("north").await;
    let before = round.outside().await;
    let insert = format!(
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) \
         VALUES ({}, 'x', 'x', 'r3-upsert@x.invalid', '+39 000 1112223', 'north')",
        south.id
    );
    // DO NOTHING: no row or a bare 23505, nothing returned of the hidden row.
    for (path, outcome) in round
        .attack(
            "sales",
            EVERY_PATH,
            &format!("{insert} ON CONFLICT DO NOTHING RETURNING tax_code, email"),
        )
        .await
    {
        assert!(
            outcome.rows.is_empty() && matches!(code(&outcome), "ok" | "23505"),
            "{path:?}: {outcome:?}"
        );
    }
    // DO UPDATE on a filtered or masked table: the proxy refuses it (42501), the views have no
    // arbiter index (42P10).
    for (role, sql) in [
        (
            "sales",
            format!("{insert} ON CONFLICT (id) DO UPDATE SET city = excluded.city RETURNING *"),
        ),
        (
            "sales",
            format!(
                "WITH u AS ({insert} ON CONFLICT (email) DO UPDATE SET city = 'x' RETURNING tax_code) SELECT * FROM u"
            ),
        ),
        (
            "support",
            "INSERT INTO tickets (id, contact_id, subject, body, status) \
             SELECT id, contact_id, 's', 'b', 'open' FROM tickets ORDER BY id LIMIT 1 \
             ON CONFLICT (id) DO UPDATE SET status = 'x' RETURNING body, subject"
                .to_owned(),
        ),
    ] {
        round.refused(role, THROUGH_PROXY, &sql, &["42501"]).await;
        round
            .refused(role, STRAIGHT, &sql, &["42P10", "42501"])
            .await;
    }
    // Marketing may not revive a withdrawn consent (which would widen its own filter), in any form.
    let withdrawn = round
        .owner_value("SELECT min(id) FROM consents WHERE withdrawn_at IS NOT NULL")
        .await;
    for sql in [
        format!(
            "INSERT INTO consents (id, contact_id, purpose, granted_at, source) \
             SELECT id, contact_id, 'marketing', now(), 'r3' FROM consents WHERE id = {withdrawn} \
             ON CONFLICT (id) DO UPDATE SET withdrawn_at = NULL"
        ),
        format!("UPDATE consents SET withdrawn_at = NULL WHERE id = {withdrawn} RETURNING *"),
        "INSERT INTO consents (contact_id, purpose, granted_at, source) \
         SELECT id, 'marketing', now(), 'r3' FROM contacts ON CONFLICT DO NOTHING"
            .to_owned(),
    ] {
        round
            .refused("marketing", EVERY_PATH, &sql, &["42501"])
            .await;
    }
    // RETURNING of masked columns shows them masked, whatever the write.
    let masked = round
        .rows(
            "sales",
            EVERY_PATH,
            &format!(
                "UPDATE contacts SET first_name = first_name WHERE id = {} \
                 RETURNING tax_code, birth_date::text, (SELECT max(tax_code) FROM contacts WHERE id <> {})",
                own.id, own.id
            ),
        )
        .await;
    let shown = round
        .owner_value(&format!(
            "SELECT repeat('*', 12) || right(tax_code::text, 4) FROM contacts WHERE id = {}",
            own.id
        ))
        .await;
    for rows in masked {
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0], shown, "tax_code comes back as sales reads it");
        assert!(rows[0][1].ends_with("-01-01"), "{rows:?}");
    }
    assert_eq!(
        round.outside().await,
        before,
        "an upsert changed a hidden row"
    );
    // Support inserts tickets (of any contact: it has no row filter) and reads them back redacted.
    for rows in round
        .rows(
            "support",
            EVERY_PATH,
            "INSERT INTO tickets (contact_id, subject, body, status) \
             SELECT id, 'about ' || email, 'call ' || phone, 'open' FROM contacts ORDER BY id LIMIT 3 \
             RETURNING subject, body",
        )
        .await
    {
        assert_eq!(rows.len(), 3, "{rows:?}");
    }
}

#[tokio::test]
async fn copy_to_with_a_query_is_masked_and_copy_from_writes_nothing_outside() {
    let round = Round::start().await;
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    let before = round.outside().await;
    for (role, paths, sql, lines) in [
        (
            "sales",
            EVERY_PATH,
            "COPY (SELECT email, phone, tax_code, birth_date FROM contacts) TO STDOUT",
            Some(north.as_str()),
        ),
        (
            "sales",
            EVERY_PATH,
            "COPY (SELECT c.email, d.amount FROM contacts c JOIN deals d ON d.contact_id = c.id \
             ORDER BY c.tax_code) TO STDOUT (FORMAT csv, HEADER)",
            None,
        ),
        // Straight, COPY of a view is PostgreSQL's 42809 ("try the COPY (SELECT ...) TO variant").
        (
            "sales",
            THROUGH_PROXY,
            "COPY contacts TO STDOUT",
            Some(north.as_str()),
        ),
        (
            "support",
            EVERY_PATH,
            "COPY (SELECT email, phone, last_name FROM contacts) TO STDOUT (FORMAT binary)",
            None,
        ),
        (
            "support",
            EVERY_PATH,
            "COPY (SELECT subject, body FROM tickets UNION ALL SELECT notes, '' FROM interactions) TO STDOUT",
            None,
        ),
        (
            "analyst",
            EVERY_PATH,
            "COPY (SELECT id, birth_date FROM contacts ORDER BY birth_date) TO STDOUT",
            None,
        ),
        (
            "marketing",
            THROUGH_PROXY,
            "COPY contacts (email) TO STDOUT",
            None,
        ),
    ] {
        for path in paths {
            let session = round.session(role, *path).await;
            let context = format!("{role} {path:?} `{sql}`");
            let streamed = copy_out(&session, sql)
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_clean(&context, sql, &streamed, &round.hidden[role]);
            if let Some(lines) = lines {
                assert_eq!(
                    streamed.lines().count().to_string(),
                    lines,
                    "{context}: {streamed}"
                );
            }
        }
    }
    // COPY to or from files and programs, and COPY FROM into a policy table through the proxy.
    for sql in [
        "COPY contacts TO '/tmp/maschera-r3-contacts'",
        "COPY (SELECT email FROM contacts) TO PROGRAM 'cat'",
        "COPY contacts FROM '/etc/hostname'",
        "COPY contacts FROM STDIN",
    ] {
        round
            .refused("sales", THROUGH_PROXY, sql, &["42501", "0A000"])
            .await;
    }
    // Straight, COPY FROM into the view goes through its write trigger: a row outside the filter or
    // a value for a column sales does not see is refused, and nothing is stored.
    let login = round.session("sales", Path::Straight).await;
    for row in [
        "r3-a@x.invalid\t+39 000 7770001\tsouth\t\\N\n",
        "r3-b@x.invalid\t+39 000 7770002\tnorth\tAAAAAA00A00A000A\n",
    ] {
        let err = copy_in(
            &login,
            "COPY contacts (email, phone, region, tax_code) FROM STDIN",
            row,
        )
        .await
        .expect_err(row);
        assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    }
    assert_eq!(round.outside().await, before, "a COPY changed a hidden row");
}

/// What `COPY ... TO STDOUT` streamed, or its error as text.
async fn copy_out(session: &Session, sql: &str) -> Result<String, String> {
    use futures_util::StreamExt;
    let stream = session
        .client
        .copy_out(sql)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| format!("{e:?}"))?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Sends `data` with `COPY ... FROM STDIN`.
async fn copy_in(session: &Session, sql: &str, data: &str) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = session.client.copy_in(sql).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data.to_owned())).await?;
    sink.finish().await
}

#[tokio::test]
async fn cursors_for_update_with_hold_scroll_and_binary_read_only_the_view() {
    let round = Round::start().await;
    let south = round.contact_of("south").await;
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    for path in [Path::Simple, Path::Straight] {
        let session = round.session("sales", path).await;
        let fetched = round
            .attack_in(
                &session,
                "sales",
                path,
                "BEGIN; DECLARE c CURSOR FOR SELECT email, tax_code FROM contacts FOR UPDATE; \
                 FETCH ALL FROM c; COMMIT",
            )
            .await;
        assert_eq!(fetched.rows.len().to_string(), north, "{path:?}");
        let locked = round
            .attack_in(
                &session,
                "sales",
                path,
                &format!(
                    "BEGIN; DECLARE u CURSOR FOR SELECT d.id FROM deals d WHERE d.contact_id = {} FOR UPDATE; \
                     FETCH ALL FROM u; COMMIT",
                    south.id
                ),
            )
            .await;
        assert!(locked.rows.is_empty(), "{path:?}: {locked:?}");
        for sql in [
            "DECLARE h CURSOR WITH HOLD FOR SELECT email, tax_code, birth_date FROM contacts ORDER BY tax_code",
            "FETCH ALL FROM h",
            "CLOSE h",
            "BEGIN; DECLARE s SCROLL CURSOR FOR SELECT tax_code, birth_date FROM contacts ORDER BY birth_date; \
             FETCH LAST FROM s; FETCH PRIOR FROM s; FETCH ABSOLUTE 1 FROM s; FETCH BACKWARD ALL FROM s; COMMIT",
            "BEGIN; DECLARE b BINARY CURSOR FOR SELECT email, tax_code FROM contacts; FETCH ALL FROM b; COMMIT",
            "BEGIN; DECLARE n NO SCROLL CURSOR FOR SELECT c.tax_code, i.notes FROM contacts c \
             JOIN interactions i ON i.contact_id = c.id FOR SHARE OF c; FETCH 1000 FROM n; COMMIT",
        ] {
            let outcome = round.attack_in(&session, "sales", path, sql).await;
            assert!(outcome.error.is_none(), "{path:?} `{sql}`: {outcome:?}");
        }
        let refused = round
            .attack_in(
                &session,
                "sales",
                path,
                "BEGIN; DECLARE x CURSOR FOR SELECT * FROM health_records; FETCH ALL FROM x; COMMIT",
            )
            .await;
        assert!(
            matches!(code(&refused), "42501" | "42P01"),
            "{path:?}: {refused:?}"
        );
        session.simple("ROLLBACK").await;
    }
}

#[tokio::test]
async fn aggregates_windows_and_ordering_see_only_the_masked_value() {
    let round = Round::start().await;
    // The ordering oracle: sorting by a generalised or masked column orders by what the role reads.
    let by_year = round
        .owner_values(
            "SELECT id FROM contacts WHERE region = 'north' \
             ORDER BY date_trunc('year', birth_date) NULLS LAST, id",
        )
        .await;
    let by_date = round
        .owner_values(
            "SELECT id FROM contacts WHERE region = 'north' ORDER BY birth_date NULLS LAST, id",
        )
        .await;
    assert_ne!(by_year, by_date, "the data must tell the two orders apart");
    round
        .column(
            "sales",
            &[Path::Simple, Path::Straight],
            "SELECT id FROM contacts ORDER BY birth_date NULLS LAST, id",
            &by_year,
        )
        .await;
    let by_masked_code = round
        .owner_values(
            "SELECT id FROM contacts WHERE region = 'north' \
             ORDER BY right(tax_code::text, 4) NULLS LAST, id",
        )
        .await;
    round
        .column(
            "sales",
            &[Path::Simple, Path::Straight],
            "SELECT id FROM contacts ORDER BY tax_code NULLS LAST, id",
            &by_masked_code,
        )
        .await;
    // Predicates, FILTER clauses and windows over a masked column count masked values.
    let north_date = round
        .owner_value(
            "SELECT birth_date::text FROM contacts WHERE region = 'north' \
             AND extract(doy FROM birth_date) > 1 ORDER BY id LIMIT 1",
        )
        .await;
    let north_code = round
        .owner_value(
            "SELECT tax_code FROM contacts WHERE region = 'north' AND tax_code IS NOT NULL ORDER BY id LIMIT 1",
        )
        .await;
    let year_count = round
        .owner_value(
            "SELECT count(*) FROM contacts WHERE region = 'north' AND birth_date >= '1981-01-01'",
        )
        .await;
    let zero = ["0".to_owned()];
    for (role, sql, expected) in [
        (
            "sales",
            format!("SELECT count(*)::text FROM contacts WHERE birth_date = '{north_date}'"),
            zero.to_vec(),
        ),
        (
            "sales",
            format!(
                "SELECT count(*)::text FROM contacts WHERE tax_code LIKE '{}%'",
                &north_code[..4]
            ),
            zero.to_vec(),
        ),
        (
            "sales",
            "SELECT (count(*) FILTER (WHERE birth_date > '1980-06-30'))::text FROM contacts".to_owned(),
            vec![year_count],
        ),
        (
            "sales",
            format!(
                "SELECT count(*)::text FROM contacts c WHERE EXISTS \
                 (SELECT 1 FROM contacts d WHERE d.tax_code = '{north_code}')"
            ),
            zero.to_vec(),
        ),
        (
            "support",
            "SELECT count(*)::text FROM contacts WHERE phone LIKE '+39%' OR email LIKE '%.%@%' OR last_name LIKE '__%.'"
                .to_owned(),
            zero.to_vec(),
        ),
        (
            "analyst",
            format!(
                "SELECT count(*)::text FROM contacts WHERE birth_date = '{north_date}' OR id = '1' OR id::text ~ '^[0-9]+$'"
            ),
            zero.to_vec(),
        ),
        (
            "marketing",
            format!("SELECT count(*)::text FROM contacts WHERE birth_date = '{north_date}'"),
            zero.to_vec(),
        ),
    ] {
        round.column(role, EVERY_PATH, &sql, &expected).await;
    }
    // Aggregates and windows over what each role reads masked or generalised show masked values only
    // (the hidden values are checked on every path).
    for (role, text, ordered) in [
        ("sales", "tax_code", "birth_date"),
        ("marketing", "email", "birth_date"),
        ("support", "phone", "last_name"),
        ("analyst", "id::text", "birth_date"),
    ] {
        for sql in [
            format!(
                "SELECT min({ordered})::text, max({ordered})::text, string_agg({text}, ',' ORDER BY {text}), \
                 percentile_disc(0.5) WITHIN GROUP (ORDER BY {ordered}) FROM contacts"
            ),
            format!(
                "SELECT {text}, {ordered}, rank() OVER (ORDER BY {ordered}), \
                 lag({ordered}) OVER w, first_value({text}) OVER w, nth_value({ordered}, 2) OVER w \
                 FROM contacts WINDOW w AS (ORDER BY {ordered}, {text}) ORDER BY 2, 1 LIMIT 50"
            ),
            format!(
                "SELECT {ordered}, count(*) FROM contacts GROUP BY ROLLUP ({ordered}) ORDER BY 1"
            ),
            format!(
                "SELECT array_agg(DISTINCT {text}) FILTER (WHERE {text} IS NOT NULL), \
                 json_agg({ordered}), mode() WITHIN GROUP (ORDER BY {ordered}), max({text}) FROM contacts"
            ),
        ] {
            round.rows(role, EVERY_PATH, &sql).await;
        }
    }
}

#[tokio::test]
async fn error_messages_show_no_hidden_value_on_either_path() {
    let round = Round::start().await;
    let south = round.contact_of("south").await;
    let own = round.contact_of("north").await;
    let north_code = round
        .owner_value(
            "SELECT tax_code FROM contacts WHERE region = 'north' AND tax_code IS NOT NULL ORDER BY id LIMIT 1",
        )
        .await;
    let before = round.outside().await;
    // A predicate that would raise on a hidden value never sees one: no error at all.
    for sql in [
        format!("SELECT 1 / (CASE WHEN tax_code = '{north_code}' THEN 0 ELSE 1 END) FROM contacts"),
        format!(
            "SELECT 1 / (CASE WHEN email = '{}' THEN 0 ELSE 1 END) FROM contacts",
            south.email
        ),
        format!("SELECT 1 / (id - {}) FROM contacts", south.id),
        format!("SELECT email::int FROM contacts WHERE id = {}", south.id),
        format!(
            "SELECT (SELECT tax_code FROM contacts WHERE id = {})::int",
            south.id
        ),
    ] {
        round.rows("sales", EVERY_PATH, &sql).await;
    }
    // Errors raised on what the role reads show that, and no more; constraint errors of writes never
    // print the stored row (raw tax code and birth date).
    let cast = |sql: &str| sql.to_owned();
    for (role, sql, codes) in [
        (
            "sales",
            cast("SELECT tax_code::int FROM contacts"),
            &["22P02"][..],
        ),
        (
            "sales",
            "SELECT birth_date::text::int FROM contacts WHERE birth_date IS NOT NULL".to_owned(),
            &["22P02"][..],
        ),
        (
            "sales",
            format!(
                "SELECT 1 / (length(tax_code) - 16) FROM contacts WHERE id = {}",
                own.id
            ),
            &["22012"][..],
        ),
        (
            "support",
            "SELECT last_name::int + email::int + phone::int FROM contacts".to_owned(),
            &["22P02"][..],
        ),
        (
            "support",
            "SELECT (SELECT body FROM tickets ORDER BY id LIMIT 1)::int".to_owned(),
            &["22P02"][..],
        ),
        (
            "analyst",
            "SELECT id::bigint FROM contacts".to_owned(),
            &["22P02", "22003"][..],
        ),
        (
            "marketing",
            cast("SELECT birth_date::text::numeric FROM contacts"),
            &["22P02"][..],
        ),
        (
            "sales",
            format!(
                "UPDATE contacts SET email = '{}' WHERE id = {}",
                south.email, own.id
            ),
            &["23505"][..],
        ),
        (
            "sales",
            format!("UPDATE contacts SET region = 'west' WHERE id = {}", own.id),
            &["23514", "42501"][..],
        ),
        (
            "sales",
            format!("UPDATE contacts SET phone = NULL WHERE id = {}", own.id),
            &["23502"][..],
        ),
        (
            "sales",
            format!(
                "UPDATE contacts SET id = {} WHERE id = {}",
                south.id, own.id
            ),
            &["42501"][..],
        ),
        (
            "sales",
            format!(
                "UPDATE deals SET contact_id = 999999999 WHERE id = {}",
                own.deal
            ),
            &["23503", "42501"][..],
        ),
        (
            "support",
            "UPDATE tickets SET status = NULL WHERE id = (SELECT min(id) FROM tickets)".to_owned(),
            &["23502"][..],
        ),
        (
            "support",
            "INSERT INTO consents (contact_id, purpose, granted_at, source) \
             VALUES (999999999, 'marketing', now(), 'r3')"
                .to_owned(),
            &["23503"][..],
        ),
    ] {
        round.refused(role, EVERY_PATH, &sql, codes).await;
    }
    assert_eq!(round.outside().await, before);
}

#[tokio::test]
async fn explain_shows_no_value_and_explain_analyze_is_refused_through_the_proxy() {
    let round = Round::analyzed().await;
    for role in ROLES {
        for sql in [
            "EXPLAIN ANALYZE SELECT * FROM contacts",
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM contacts WHERE birth_date > '1980-01-01'",
            "EXPLAIN (ANALYZE true, BUFFERS) SELECT 1 FROM contacts",
            "EXPLAIN (ANALYZE on, TIMING off) SELECT 1 FROM contacts",
        ] {
            round
                .refused(role, THROUGH_PROXY, sql, &["42501", "0A000"])
                .await;
        }
        // EXPLAIN without ANALYZE (both paths), and EXPLAIN ANALYZE straight (its row counts are a
        // known covert channel), show plans and masking expressions, never a value or the key.
        for sql in [
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM contacts",
            "EXPLAIN (VERBOSE, FORMAT JSON) SELECT c.*, k.* FROM contacts c JOIN consents k ON k.contact_id = c.id",
            "EXPLAIN (FORMAT YAML, SETTINGS) SELECT city, count(*) FROM contacts GROUP BY 1",
        ] {
            round.rows(role, EVERY_PATH, sql).await;
        }
        round
            .rows(
                role,
                STRAIGHT,
                "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT * FROM contacts ORDER BY city",
            )
            .await;
    }
}

#[tokio::test]
async fn catalogs_and_statistics_show_no_value_on_either_path() {
    let round = Round::analyzed().await;
    for role in ROLES {
        for sql in [
            "SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats",
            "SELECT * FROM pg_catalog.pg_statistic",
            "SELECT * FROM pg_stats_ext",
            "SELECT * FROM pg_stat_user_indexes",
            "SELECT * FROM maschera_private.keys",
            "SELECT * FROM maschera_lookup.contacts",
        ] {
            round.refused(role, THROUGH_PROXY, sql, &["42501"]).await;
        }
        // The table statistics views (ORMs read them to describe tables): the relations' names,
        // every counter NULL (they count the rows a filter hides).
        for sql in [
            "SELECT relname, coalesce(n_live_tup::text, 'null') || coalesce(seq_scan::text, 'null') \
             FROM pg_stat_user_tables",
            "SELECT relname, coalesce(n_live_tup::text, 'null') || coalesce(n_tup_ins::text, 'null') \
             FROM pg_catalog.pg_stat_all_tables",
            "SELECT s.relname, coalesce(s.heap_blks_read::text, 'null') || coalesce(s.heap_blks_hit::text, 'null') \
             FROM pg_statio_user_tables s",
        ] {
            for rows in round.rows(role, THROUGH_PROXY, sql).await {
                assert!(
                    rows.iter().any(|r| r[0] == "contacts"),
                    "{role} `{sql}`: {rows:?}"
                );
                assert!(
                    rows.iter().all(|r| r[1] == "nullnull"),
                    "{role} `{sql}`: {rows:?}"
                );
            }
        }
        // Straight, the statistics of the base tables are not the login's to read.
        for sql in [
            "SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats \
             WHERE schemaname = 'public'",
            "SELECT * FROM pg_stats_ext WHERE schemaname = 'public'",
        ] {
            let rows = round.rows(role, STRAIGHT, sql).await;
            assert!(rows[0].is_empty(), "{role} `{sql}`: {rows:?}");
        }
        for sql in [
            "SELECT * FROM pg_catalog.pg_statistic",
            "SELECT * FROM maschera_private.keys",
            "SELECT * FROM maschera_lookup.contacts",
            "SELECT * FROM public.contacts",
        ] {
            round.refused(role, STRAIGHT, sql, &["42501"]).await;
        }
        // Definitions of views and policies are metadata: no value and no key in them.
        for sql in [
            "SELECT schemaname, viewname, definition FROM pg_views WHERE schemaname LIKE 'maschera%'",
            "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) FROM pg_policy",
            "SELECT prosrc FROM pg_proc WHERE pronamespace::regnamespace::text LIKE 'maschera%'",
            "SELECT column_name, column_default FROM information_schema.columns WHERE table_schema LIKE 'maschera%'",
            "SELECT relname, reltuples FROM pg_class WHERE relname = 'contacts'",
        ] {
            round.rows(role, EVERY_PATH, sql).await;
        }
    }
}

#[tokio::test]
async fn functions_that_could_leak_see_only_masked_values_or_are_refused() {
    let round = Round::start().await;
    let leak = "CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 \
                AS $$BEGIN RAISE NOTICE 'leak %', $1; RETURN true; END$$";
    for role in ROLES {
        round
            .refused(role, THROUGH_PROXY, leak, &["42501", "0A000"])
            .await;
        // Straight the login may create a temporary function: a cheap leaky predicate still runs
        // after the row filter and gets the masked value.
        let session = round.session(role, Path::Straight).await;
        let created = round.attack_in(&session, role, Path::Straight, leak).await;
        assert!(created.error.is_none(), "{created:?}");
        let (column, other) = match *role {
            "analyst" => ("id", "birth_date"),
            "support" => ("email", "last_name"),
            _ => ("email", "birth_date"),
        };
        for sql in [
            format!(
                "SELECT count(*) FROM contacts WHERE pg_temp.leak({column}::text) \
                 AND pg_temp.leak({other}::text)"
            ),
            format!(
                "SELECT 1 FROM consents k JOIN contacts c ON pg_temp.leak(c.{column}::text || c.{other}::text) \
                 AND k.contact_id = c.id"
            ),
            "SELECT count(*) FROM contacts WHERE pg_temp.leak(contacts::text)".to_owned(),
        ] {
            let outcome = round.attack_in(&session, role, Path::Straight, &sql).await;
            assert!(outcome.error.is_none(), "{role} `{sql}`: {outcome:?}");
        }
        assert!(
            session.notices().contains("leak"),
            "{role}: the leaky function ran"
        );
        let base = round
            .attack_in(
                &session,
                role,
                Path::Straight,
                "SELECT count(*) FROM public.contacts WHERE pg_temp.leak(email)",
            )
            .await;
        assert_eq!(code(&base), "42501", "{base:?}");
    }
    // Built-ins that read files, settings or run SQL text.
    for sql in [
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT pg_read_binary_file('/etc/hostname')",
        "SELECT pg_stat_file('/etc/hostname')",
        "SELECT current_setting('data_directory')",
        "SELECT query_to_xml('SELECT tax_code FROM maschera_sales.contacts', true, true, '')",
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
    ] {
        for role in ROLES {
            round.refused(role, THROUGH_PROXY, sql, &["42501"]).await;
        }
    }
    for sql in [
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT current_setting('data_directory')",
    ] {
        round.refused("sales", STRAIGHT, sql, &["42501"]).await;
    }
    round
        .column(
            "sales",
            EVERY_PATH,
            "SELECT current_setting('maschera.region')",
            &["north".to_owned()],
        )
        .await;
}

/// The region and the count of contacts sam's session sees.
async fn region_and_count(session: &Session) -> Vec<String> {
    session
        .simple("SELECT current_setting('maschera.region', true), count(*)::text FROM contacts")
        .await
        .ok()[0]
        .clone()
}

#[tokio::test]
async fn session_attributes_cannot_be_changed_through_the_proxy_by_any_route() {
    let round = Round::start().await;
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    let expected = vec!["north".to_owned(), north];
    for sql in [
        "SET maschera.region = 'south'",
        "SET \"MASCHERA.REGION\" = 'south'",
        "SET \"maschera\".\"region\" = 'south'",
        "SET SESSION maschera.region TO 'south'",
        "BEGIN; SET LOCAL maschera.region = 'south'; COMMIT",
        "SET maschera.region TO DEFAULT",
        "RESET maschera.region",
        "RESET ALL",
        "DISCARD ALL",
        "SELECT set_config('maschera.region', 'south', false)",
        "SELECT pg_catalog.set_config('MASCHERA.region', 'south', false)",
        "SELECT * FROM set_config('maschera.region', 'south', true)",
        "SELECT s FROM generate_series(1, 2) g, LATERAL set_config('maschera.region', 'south', false) s",
        "UPDATE pg_settings SET setting = 'south' WHERE name = 'maschera.region'",
        "ALTER ROLE current_user SET maschera.region = 'south'",
        "ALTER ROLE maschera_sales SET maschera.region = 'south'",
        "ALTER DATABASE crm SET maschera.region = 'south'",
        "ALTER ROLE current_user SET standard_conforming_strings = off",
        "ALTER ROLE current_user SET search_path = public",
        "SET search_path = maschera_support, public",
        "SET row_security = off",
        "SET standard_conforming_strings = off",
        "SET client_encoding = 'SJIS'",
        "SET ROLE maschera_sales_owner",
        "SET SESSION AUTHORIZATION maschera_sales_owner",
        "SELECT set_config('role', 'maschera_sales_owner', false)",
        "SELECT count(*) FROM contacts; SET maschera.region = 'south'; SELECT count(*) FROM contacts",
    ] {
        for path in THROUGH_PROXY {
            let session = round.session("sales", *path).await;
            round.attack_in(&session, "sales", *path, sql).await;
            session.simple("ROLLBACK").await;
            assert_eq!(
                region_and_count(&session).await,
                expected,
                "{path:?} after `{sql}`"
            );
        }
    }
    // Startup options and PGOPTIONS refuse the login.
    for options in [
        "-c%20maschera.region%3Dsouth",
        "-c%20search_path%3Dpublic",
        "-c%20standard_conforming_strings%3Doff",
        "--maschera.region%3Dsouth",
    ] {
        let uri = format!("{}?options={options}", round.crm.uri("sam"));
        let err = Session::try_connect(&uri)
            .await
            .err()
            .unwrap_or_else(|| panic!("options {options} accepted"));
        assert!(
            matches!(
                err.code().map(|c| c.code()),
                Some("0A000" | "42501" | "08P01")
            ),
            "{err:?}"
        );
    }
    let psql = std::process::Command::new(round.crm.pg.bin_dir().join("psql"))
        .arg(round.crm.uri("sam"))
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM contacts"])
        .env("PGOPTIONS", "-c maschera.region=south")
        .output()
        .expect("psql");
    assert!(!psql.status.success(), "PGOPTIONS accepted");
}

#[tokio::test]
async fn set_role_and_session_authorization_are_refused_on_both_paths() {
    let round = Round::start().await;
    for role in ROLES {
        for sql in [
            format!("SET ROLE maschera_{role}_owner"),
            "SET ROLE postgres".to_owned(),
            format!(
                "SET ROLE maschera_{}",
                if *role == "support" {
                    "sales"
                } else {
                    "support"
                }
            ),
            format!("SET SESSION AUTHORIZATION maschera_{role}_owner"),
            "SET SESSION AUTHORIZATION postgres".to_owned(),
        ] {
            round.refused(role, EVERY_PATH, &sql, &["42501"]).await;
        }
        // Another role's views and the owner roles' schemas stay closed to the login.
        let other = if *role == "support" {
            "sales"
        } else {
            "support"
        };
        round
            .refused(
                role,
                EVERY_PATH,
                &format!("SELECT * FROM maschera_{other}.contacts"),
                &["42501"],
            )
            .await;
    }
}

#[tokio::test]
async fn prepared_statements_follow_the_database_lock_across_a_policy_reload() {
    let round = Round::start_from(Fixture::crm(300).poll_seconds(1)).await;
    let own = round.contact_of("north").await;
    let masked = round
        .owner_value(&format!(
            "SELECT left(email, 1) || '***@' || split_part(email, '@', 2) FROM contacts WHERE id = {}",
            own.id
        ))
        .await;
    let sam = round.session("sales", Path::Simple).await;
    let login = round.session("sales", Path::Straight).await;
    let select = "SELECT email FROM contacts WHERE id = $1";
    let id: i64 = own.id.parse().unwrap();
    let through = sam.client.prepare(select).await.unwrap();
    let straight = login.client.prepare(select).await.unwrap();
    let shown: String = sam.client.query_one(&through, &[&id]).await.unwrap().get(0);
    assert_eq!(shown, own.email);
    sam.simple(&format!(
        "PREPARE by_id(bigint) AS SELECT email FROM contacts WHERE id = $1; \
         DECLARE held CURSOR WITH HOLD FOR SELECT email FROM contacts WHERE id = {}",
        own.id
    ))
    .await
    .ok();
    // The policy masks sales' e-mail from now on: the views change (apply) and the proxy reloads.
    let policy = std::fs::read_to_string(&round.crm.applied.policy).unwrap();
    let edited = policy.replace(
        "show = [\"id\", \"first_name\", \"last_name\", \"email\", \"phone\", \"street_address\"]\ncolumns = { birth_date = \"year\", tax_code = \"mask.last(4)\" }",
        "show = [\"id\", \"first_name\", \"last_name\", \"phone\", \"street_address\"]\ncolumns = { birth_date = \"year\", tax_code = \"mask.last(4)\", email = \"mask.email\" }",
    );
    assert_ne!(edited, policy, "the edit applies to the reference policy");
    std::fs::write(&round.crm.applied.policy, edited).unwrap();
    round.apply_again().expect("apply the edited policy");
    round
        .crm
        .proxy
        .wait_for_log_async("policy reloaded", 1)
        .await;
    // Statements prepared before, run after: the e-mail comes back masked (or not at all).
    for (what, result) in [
        (
            "proxy, Parse before",
            sam.client.query(&through, &[&id]).await,
        ),
        (
            "straight, Parse before",
            login.client.query(&straight, &[&id]).await,
        ),
    ] {
        match result {
            Ok(rows) => {
                let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                assert_eq!(got, std::slice::from_ref(&masked), "{what}");
            }
            Err(err) => assert!(!format!("{err:?}").contains(&own.email), "{what}: {err:?}"),
        }
    }
    let executed = sam.simple(&format!("EXECUTE by_id({})", own.id)).await;
    assert!(
        !outcome_text(&executed).contains(&own.email),
        "EXECUTE after the reload: {executed:?}"
    );
    // A WITH HOLD cursor was materialized when its transaction ended, before the reload: FETCH
    // returns what the policy showed then and reads nothing after.
    assert_eq!(
        sam.simple("FETCH ALL FROM held").await.column(0),
        std::slice::from_ref(&own.email)
    );
    // A new session, and a cursor declared after the reload, read the new mask.
    let fresh = round.session("sales", Path::Extended).await;
    for session in [&sam, &fresh] {
        let outcome = session
            .simple(&format!(
                "BEGIN; DECLARE after CURSOR FOR SELECT email FROM contacts WHERE id = {}; \
                 FETCH ALL FROM after; COMMIT",
                own.id
            ))
            .await;
        assert_eq!(outcome.column(0), std::slice::from_ref(&masked));
    }
}

#[tokio::test]
async fn parameters_typed_as_masked_columns_test_only_the_masked_value() {
    let round = Round::start().await;
    let own = round.contact_of("north").await;
    let south = round.contact_of("south").await;
    let (code_of_own, date_of_own) = {
        let values = round
            .owner_values(&format!(
                "SELECT tax_code, birth_date::text FROM contacts WHERE id = {}",
                own.id
            ))
            .await;
        (values[0].clone(), values[1].clone())
    };
    let date = tokio_postgres::types::Type::DATE;
    let text = tokio_postgres::types::Type::TEXT;
    for path in [Path::Extended, Path::Straight] {
        let session = round.session("sales", path).await;
        let client = &session.client;
        // Parse with typed parameters, Bind with the hidden values: no row matches.
        let by_code = client
            .prepare_typed(
                "SELECT id FROM contacts WHERE tax_code = $1",
                std::slice::from_ref(&text),
            )
            .await
            .unwrap();
        assert!(
            client
                .query(&by_code, &[&code_of_own])
                .await
                .unwrap()
                .is_empty()
        );
        let by_date = client
            .prepare_typed(
                "SELECT id FROM contacts WHERE birth_date = $1::date",
                std::slice::from_ref(&date),
            )
            .await
            .unwrap();
        let day = pg_date(&date_of_own);
        assert!(client.query(&by_date, &[&day]).await.unwrap().is_empty());
        let by_email = client
            .prepare("SELECT id FROM contacts WHERE email = $1")
            .await
            .unwrap();
        assert!(
            client
                .query(&by_email, &[&south.email])
                .await
                .unwrap()
                .is_empty()
        );
        // An UPDATE that sets a masked column from a parameter accepts only the value as read.
        let id: i64 = own.id.parse().unwrap();
        let err = client
            .execute(
                "UPDATE contacts SET tax_code = $1 WHERE id = $2",
                &[&"AAAAAA00A00A000A", &id],
            )
            .await
            .expect_err("a changed tax code is refused");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{path:?}: {err:?}"
        );
        let stored = round
            .owner_value(&format!(
                "SELECT tax_code FROM contacts WHERE id = {}",
                own.id
            ))
            .await;
        assert_eq!(stored, code_of_own, "{path:?}");
        // A parameter typed as the masked column's type, compared with it in a subquery.
        let count: i64 = client
            .query_one(
                "SELECT count(*) FROM contacts WHERE EXISTS (SELECT 1 FROM contacts d WHERE d.tax_code = $1::char(16))",
                &[&code_of_own],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "{path:?}");
    }
}

/// A `date` parameter from `YYYY-MM-DD` text, sent in PostgreSQL's binary format (days since 2000).
fn pg_date(text: &str) -> PgDate {
    let parts: Vec<i64> = text.split('-').map(|p| p.parse().unwrap()).collect();
    PgDate(days_from_civil(parts[0], parts[1], parts[2]) - days_from_civil(2000, 1, 1))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `date` in PostgreSQL's binary format.
#[derive(Debug)]
struct PgDate(i64);

impl tokio_postgres::types::ToSql for PgDate {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&i32::try_from(self.0)?.to_be_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }
    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::DATE
    }
    tokio_postgres::types::to_sql_checked!();
}

#[tokio::test]
async fn a_refused_statement_in_a_multi_statement_query_runs_none_of_them() {
    let round = Round::start().await;
    let own = round.contact_of("north").await;
    let city = |id: &str| format!("SELECT city FROM contacts WHERE id = {id}");
    let before = round.owner_value(&city(&own.id)).await;
    for path in [Path::Simple] {
        for sql in [
            format!(
                "UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; SELECT * FROM health_records",
                own.id
            ),
            format!(
                "UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; SET maschera.region = 'south'",
                own.id
            ),
            format!(
                "SELECT email FROM contacts; UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; \
                 SELECT pg_read_file('/etc/hostname')",
                own.id
            ),
            format!(
                "UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; CREATE TEMP TABLE t (x int)",
                own.id
            ),
            format!(
                "UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; \
                 INSERT INTO contacts (id, email, phone, region) VALUES (1, 'a', 'b', 'north') \
                 ON CONFLICT (id) DO UPDATE SET city = 'x'",
                own.id
            ),
            format!(
                "UPDATE contacts SET city = 'r3-mixed' WHERE id = {}; SELECT 1 FROM U&\"contacts\"",
                own.id
            ),
        ] {
            let outcome = round.attack("sales", &[path], &sql).await.remove(0).1;
            assert!(
                matches!(code(&outcome), "42501" | "0A000"),
                "`{sql}`: {outcome:?}"
            );
            assert_eq!(
                round.owner_value(&city(&own.id)).await,
                before,
                "`{sql}` ran its first statement"
            );
        }
    }
}

#[tokio::test]
async fn identifier_tricks_resolve_as_postgresql_reads_them_or_are_refused() {
    let round = Round::start().await;
    let long = "a".repeat(63);
    let nested = |depth: usize| {
        format!(
            "SELECT tax_code FROM {}contacts{} LIMIT 1",
            "(SELECT * FROM ".repeat(depth),
            ") AS q".repeat(depth)
        )
    };
    // Refused: what the proxy cannot read as PostgreSQL would, or names outside the role's schema.
    // (sqlparser reads `U&"..."` as the operator `&`; PostgreSQL then gets that reading: 42703.)
    for sql in [
        "SELECT * FROM U&\"contacts\"".to_owned(),
        "SELECT * FROM U&\"\\0063ontacts\"".to_owned(),
        "SELECT U&\"\\0074ax_code\" FROM contacts".to_owned(),
        "SELECT * FROM \"Contacts\"".to_owned(),
        "SELECT * FROM \"CONTACTS\"".to_owned(),
        "SELECT * FROM public.\"Contacts\"".to_owned(),
        "SELECT * FROM crm.public.contacts".to_owned(),
        "SELECT * FROM other.public.contacts".to_owned(),
        "SELECT * FROM \"public.contacts\"".to_owned(),
        "SELECT * FROM pg_temp.contacts".to_owned(),
        "SELECT * FROM pg_toast.contacts".to_owned(),
        "SELECT * FROM maschera_support.contacts".to_owned(),
        "SELECT * FROM maschera_lookup.contacts".to_owned(),
        format!("WITH {long}x AS (SELECT 1 AS tax_code) SELECT tax_code FROM {long}y"),
        format!("SELECT * FROM {long}{long}"),
        "SELECT * FROM health_records".to_owned(),
        "SELECT * FROM public.\"health_records\"".to_owned(),
        "SELECT * FROM \"public\".\"judicial_records\"".to_owned(),
        "SELECT 1 FROM contacts WHERE EXISTS (SELECT 1 FROM HEALTH_RECORDS)".to_owned(),
        "SELECT 1 FROM contacts NATURAL JOIN judicial_records".to_owned(),
        "SET search_path = maschera_support".to_owned(),
        "SET search_path = public, pg_temp".to_owned(),
    ] {
        round
            .refused(
                "sales",
                THROUGH_PROXY,
                &sql,
                &["42501", "0A000", "42P01", "42601", "3F000", "42703"],
            )
            .await;
    }
    // Read as PostgreSQL reads them, mapped to the role's view: masked, filtered.
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    for sql in [
        "SELECT count(*)::text FROM CONTACTS",
        "SELECT count(*)::text FROM \"contacts\"",
        "SELECT count(*)::text FROM public.contacts",
        "SELECT count(*)::text FROM \"public\".\"contacts\"",
        "SELECT count(*)::text FROM PUBLIC.CONTACTS",
        "SELECT count(*)::text FROM maschera_sales.contacts",
        "SELECT count(*)::text FROM (SELECT TAX_CODE AS \"tax_code\" FROM Public.Contacts) AS \"Contacts\"",
        "WITH \"Contacts\" AS (SELECT * FROM contacts) SELECT count(*)::text FROM \"Contacts\"",
        "WITH contacts AS (SELECT * FROM public.contacts) SELECT count(*)::text FROM contacts",
    ] {
        round
            .column("sales", THROUGH_PROXY, sql, std::slice::from_ref(&north))
            .await;
    }
    round.rows("sales", THROUGH_PROXY, &nested(30)).await;
    round
        .refused("sales", THROUGH_PROXY, &nested(300), &["54001"])
        .await;
    round
        .rows(
            "sales",
            THROUGH_PROXY,
            &format!("SELECT tax_code AS \"{long}{long}\", email AS \"é\u{301}\" FROM contacts"),
        )
        .await;
    // Straight, only the role's own schema and the catalogs exist for the login.
    for sql in [
        "SET search_path = maschera_support, public; SELECT * FROM contacts",
        "SET search_path = public; SELECT * FROM contacts",
        "SELECT * FROM \"public\".\"health_records\"",
    ] {
        round
            .refused("sales", STRAIGHT, sql, &["42501", "42P01"])
            .await;
    }
}

#[tokio::test]
async fn a_login_used_straight_cannot_choose_its_attributes() {
    let round = Round::start().await;
    let south = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'south'")
        .await;
    assert_ne!(south, "0");
    // The attribute the session sets itself is not the one the proxy sealed: no rows, never south's.
    for sql in [
        "SET maschera.region = 'south'",
        "SELECT set_config('maschera.region', 'south', false)",
    ] {
        let login = round.session("sales", Path::Straight).await;
        login.simple(sql).await;
        assert_eq!(
            region_and_count(&login).await,
            ["south".to_owned(), "0".to_owned()],
            "after `{sql}` the login reads another region"
        );
    }
}

/// The smuggle: one string literal ending in a backslash, then one holding SQL, as the proxy reads
/// them; with `standard_conforming_strings` off upstream the first literal would end at the second's
/// opening quote and PostgreSQL would run the SET.
const SMUGGLE: &str = "SELECT 'a\\', ' AS x; SET maschera.region TO south; SELECT 1 --'";

#[tokio::test]
async fn a_backslash_literal_smuggles_nothing_when_upstream_reads_backslashes_as_escapes() {
    let round = Round::start().await;
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    let expected = ["north".to_owned(), north];
    let read = [
        "a\\".to_owned(),
        " AS x; SET maschera.region TO south; SELECT 1 --".to_owned(),
    ];
    // A role default the login set on itself straight, then a database default set by its owner:
    // the proxy pins the setting on at session start, and sends the literal as E'a\\' besides (the
    // rewriter's unit tests show that second wall alone).
    let login = round.session("sales", Path::Straight).await;
    login
        .simple("ALTER ROLE CURRENT_USER SET standard_conforming_strings = off")
        .await
        .ok();
    let owner = round.crm.owner().await;
    for step in [
        "",
        "ALTER ROLE maschera_sales RESET ALL; \
         ALTER DATABASE crm SET standard_conforming_strings = off",
    ] {
        owner.batch_execute(step).await.unwrap();
        let sam = round.session("sales", Path::Simple).await;
        assert_eq!(sam.simple(SMUGGLE).await.ok()[0], read, "{step}");
        let extended = sam.extended(SMUGGLE).await;
        assert_eq!(extended.ok()[0], read, "{step}");
        assert_eq!(region_and_count(&sam).await, expected, "{step}");
        // A backslash in a literal still means what it means with the setting on.
        let like = sam
            .simple("SELECT count(*)::text FROM contacts WHERE email LIKE '%\\_%' ESCAPE '\\'")
            .await;
        assert!(like.error.is_none(), "{step}: {like:?}");
    }
}

#[tokio::test]
#[ignore = "integrity (database lock alone): a role's login used straight may ALTER ROLE itself \
            (PASSWORD, SET of session defaults); PostgreSQL 15 has no grant that forbids it. Since \
            round 4 it is detected and repaired, not prevented: see attack_round4::\
            a_login_that_alters_itself_is_reported_and_policy_apply_repairs_it"]
async fn a_login_used_straight_cannot_alter_its_own_role() {
    let round = Round::start().await;
    let login = round.session("sales", Path::Straight).await;
    for sql in [
        "ALTER ROLE CURRENT_USER SET row_security = off",
        "ALTER ROLE CURRENT_USER SET statement_timeout = 1",
        "ALTER ROLE CURRENT_USER PASSWORD 'Changed-by-the-login-r3'",
    ] {
        let outcome = login.simple(sql).await;
        assert!(outcome.error.is_some(), "`{sql}` was accepted");
    }
    let sam = round.session("sales", Path::Simple).await;
    assert!(
        sam.simple("SELECT count(*) FROM contacts")
            .await
            .error
            .is_none()
    );
}

#[tokio::test]
async fn policy_apply_resets_the_session_defaults_a_login_set_on_itself() {
    let round = Round::start().await;
    let login = round.session("sales", Path::Straight).await;
    for sql in [
        "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off",
        "ALTER ROLE CURRENT_USER IN DATABASE crm SET client_encoding = 'SJIS'",
        "ALTER ROLE CURRENT_USER IN DATABASE crm SET search_path = public",
    ] {
        login.simple(sql).await.ok();
    }
    let defaults = "SELECT coalesce(string_agg(c, ',' ORDER BY c), '') FROM pg_db_role_setting, \
                    unnest(setconfig) c WHERE setrole = 'maschera_sales'::regrole";
    let tampered = round.owner_value(defaults).await;
    assert!(
        tampered.contains("standard_conforming_strings=off") && tampered.contains("SJIS"),
        "{tampered}"
    );
    round.apply_again().expect("apply again");
    let applied = round.owner_value(defaults).await;
    assert!(
        !applied.contains("standard_conforming_strings=off")
            && !applied.contains("SJIS")
            && !applied.contains("public"),
        "after the apply: {applied}"
    );
    let sam = round.session("sales", Path::Simple).await;
    let show = "SELECT current_setting('standard_conforming_strings'), \
                current_setting('client_encoding'), current_setting('search_path')";
    assert_eq!(
        sam.simple(show).await.ok()[0],
        ["on", "UTF8", "\"maschera_sales\""]
    );
    let smuggled = sam
        .simple("SELECT 'a\\', ' AS x; SET maschera.region TO south; SELECT 1 --'")
        .await;
    assert_eq!(
        smuggled.ok()[0],
        ["a\\", " AS x; SET maschera.region TO south; SELECT 1 --"]
    );
    let north = round
        .owner_value("SELECT count(*) FROM contacts WHERE region = 'north'")
        .await;
    assert_eq!(region_and_count(&sam).await, ["north".to_owned(), north]);
}
