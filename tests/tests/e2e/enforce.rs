//! Enforcement end to end: the reference policy applied by `maschera policy apply`, the demo users
//! made by `maschera user add`, and `maschera serve` enforcing the policy. Each demo user connects
//! through the proxy with tokio-postgres (simple and extended protocol) and psql and must see exactly
//! its cells of the matrix; a corpus of bypass attempts must never show a hidden value (taken from
//! a direct admin connection) in any row, notice or error. Also: login rules, startup parameters,
//! hot reload, and a proxy that refuses to start on an invalid policy.

use maschera_tests::crm_proxy::{CrmUser, crm_password};
use maschera_tests::{CrmProxy, Fixture, PgServer, Proxy, ProxyOptions, maschera_bin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

const DB: &str = "crm";

/// Hand-chosen rows: contacts 1 and 3 in the north (3 without birth date and tax code), 2 in the
/// south, 4 in the centre; active marketing consent for 1 and 4, withdrawn for 2, none for 3.
const ROWS: &str = "
INSERT INTO contacts (id, first_name, last_name, email, phone, birth_date, tax_code, street_address, city, region) VALUES
 (1, 'Ottavio', 'Brambilla', 'ottavio.brambilla@posta.it', '+39 331 9081726', '1971-08-23', 'BRMTTV71M23F205K', 'Via Solferino 11', 'Milano', 'north'),
 (2, 'Rosalba', 'Esposito', 'rosalba.esposito@posta.it', '+39 338 4455667', '1988-02-14', 'SPSRSL88B54F839Q', 'Vico Lungo 7', 'Napoli', 'south'),
 (3, 'Ettore', 'Zanetti', 'ettore.zanetti@posta.it', '+39 345 1212343', NULL, NULL, NULL, 'Bergamo', 'north'),
 (4, 'Ludovica', 'Marchetti', 'ludovica.marchetti@posta.it', '+39 329 6677889', '1995-03-09', 'MRCLDV95C49H501T', 'Via Giulia 40', 'Roma', 'centre');
SELECT setval('contacts_id_seq', 100);
INSERT INTO consents (id, contact_id, purpose, granted_at, withdrawn_at, source) VALUES
 (1, 1, 'marketing', '2024-01-01', NULL, 'web'),
 (2, 2, 'marketing', '2024-01-01', '2024-06-01', 'web'),
 (3, 4, 'marketing', '2024-02-01', NULL, 'phone');
SELECT setval('consents_id_seq', 100);
INSERT INTO deals (id, contact_id, amount, stage) VALUES (1, 1, 1111.11, 'won'), (2, 2, 4242.42, 'open');
SELECT setval('deals_id_seq', 100);
INSERT INTO interactions (id, contact_id, channel, notes) VALUES
 (1, 1, 'call', 'wants the premium plan'), (2, 2, 'email', 'disputes invoice 77'), (3, 4, 'meeting', 'renewal talk');
SELECT setval('interactions_id_seq', 100);
INSERT INTO tickets (id, contact_id, subject, body, status) VALUES
 (1, 1, 'Password reset', 'locked out again', 'open'), (2, 2, 'Refund request', 'charged twice in May', 'closed');
SELECT setval('tickets_id_seq', 100);
INSERT INTO health_records (id, contact_id, condition, notes) VALUES (1, 2, 'hypertension stage two', 'beta blockers');
INSERT INTO judicial_records (id, contact_id, offence, sentence_date) VALUES (1, 3, 'embezzlement case', '2011-04-04');
";

/// Demo users: (name, role, attributes). `sol` is a sales user without a region, `uma` has a role
/// the policy does not know.
const USERS: &[CrmUser] = &[
    ("dora", "dpo", &[]),
    ("sam", "sales", &[("region", "north")]),
    ("sara", "sales", &[("region", "south")]),
    ("sol", "sales", &[]),
    ("mia", "marketing", &[]),
    ("tom", "support", &[]),
    ("ana", "analyst", &[]),
    ("uma", "intern", &[]),
];

/// A private PostgreSQL with the CRM, the rows above, the reference policy applied, and the proxy.
struct Enforced {
    pg: PgServer,
    proxy: Proxy,
    policy: PathBuf,
}

impl Enforced {
    /// The fixture of these tests: the rows and users above, the policy polled every second.
    fn fixture() -> Fixture {
        Fixture::crm_rows(ROWS)
            .pseudonym_key("enforce-test-pseudonym-key-42")
            .users(USERS.iter().copied())
            .poll_seconds(1)
    }

    async fn start() -> Enforced {
        Self::start_from(Self::fixture()).await
    }

    async fn start_from(fixture: Fixture) -> Enforced {
        let CrmProxy {
            pg, proxy, applied, ..
        } = fixture.start().await.expect("start the CRM");
        Enforced {
            pg,
            proxy,
            policy: applied.policy,
        }
    }

    fn uri(&self, user: &str) -> String {
        self.proxy.uri_as(user, &crm_password(user), DB)
    }

    async fn connect(&self, user: &str) -> Session {
        Session::connect(&self.uri(user)).await
    }

    /// psql through the proxy as `user`: (success, stdout, stderr).
    fn psql(&self, user: &str, sql: &str) -> (bool, String, String) {
        let ran = maschera_tests::psql_tuples(&self.uri(user), &["-c", sql]);
        (ran.ok, ran.stdout, ran.stderr)
    }

    /// Every value of `sql` run directly as the superuser, as text (for the lists of hidden values).
    async fn admin_values(&self, sql: &str) -> Vec<String> {
        let admin = self.pg.connect(DB).await.expect("admin connection");
        let mut out = Vec::new();
        for message in admin.simple_query(sql).await.expect(sql) {
            if let SimpleQueryMessage::Row(row) = message {
                out.extend((0..row.len()).filter_map(|i| row.get(i).map(str::to_owned)));
            }
        }
        out
    }

    /// The values `role` must never see, read directly from PostgreSQL.
    async fn hidden(&self, role: &str) -> Vec<String> {
        let sql = match role {
            "sales" => {
                "SELECT first_name, last_name, email, phone, street_address FROM contacts WHERE region <> 'north';
                 SELECT tax_code, birth_date::text FROM contacts;
                 SELECT notes FROM interactions WHERE contact_id = 2;
                 SELECT subject, body FROM tickets WHERE contact_id = 2"
            }
            "marketing" => {
                "SELECT phone, tax_code, street_address, birth_date::text FROM contacts;
                 SELECT first_name, last_name, email FROM contacts WHERE id IN (2, 3);
                 SELECT notes FROM interactions; SELECT subject, body FROM tickets; SELECT amount::text FROM deals"
            }
            "support" => {
                "SELECT last_name, email, phone, tax_code, street_address, birth_date::text FROM contacts;
                 SELECT amount::text FROM deals"
            }
            "analyst" => {
                "SELECT first_name, last_name, email, phone, tax_code, street_address, birth_date::text FROM contacts;
                 SELECT notes FROM interactions; SELECT subject, body FROM tickets"
            }
            other => panic!("no hidden values for {other}"),
        };
        let mut values = self.admin_values(sql).await;
        values.extend(
            self.admin_values(
                "SELECT condition, notes FROM health_records; SELECT offence, sentence_date::text FROM judicial_records",
            )
            .await,
        );
        values
    }
}

/// Any column value as the bytes PostgreSQL sent (text or binary), read as text.
struct Raw(String);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(String::from_utf8_lossy(raw).into_owned()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What a statement showed the client: its rows (values as text, NULL as `NULL`) or its error.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) rows: Vec<Vec<String>>,
    /// (SQLSTATE, every field of the error as text).
    pub(crate) error: Option<(String, String)>,
}

impl Outcome {
    pub(crate) fn ok(&self) -> &Vec<Vec<String>> {
        if let Some((code, text)) = &self.error {
            panic!("expected rows, got {code}: {text}");
        }
        &self.rows
    }

    /// The SQLSTATE and message of a refusal (panics if the statement succeeded).
    pub(crate) fn refused(&self) -> (&str, &str) {
        match &self.error {
            Some((code, text)) => (code, text),
            None => panic!("expected an error, got rows {:?}", self.rows),
        }
    }

    pub(crate) fn column(&self, index: usize) -> Vec<String> {
        self.ok().iter().map(|r| r[index].clone()).collect()
    }
}

/// A client session through the proxy that also collects notices.
pub(crate) struct Session {
    pub(crate) client: Client,
    notices: Arc<Mutex<Vec<String>>>,
}

impl Session {
    pub(crate) async fn connect(uri: &str) -> Session {
        Self::try_connect(uri)
            .await
            .unwrap_or_else(|e| panic!("connect: {e:?}"))
    }

    pub(crate) async fn try_connect(uri: &str) -> Result<Session, tokio_postgres::Error> {
        let (client, mut connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await?;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        tokio::spawn(async move {
            let mut stream = futures_stream(&mut connection);
            while let Some(Ok(message)) = stream.next().await {
                if let AsyncMessage::Notice(notice) = message {
                    sink.lock().unwrap().push(format!("{notice:?}"));
                }
            }
        });
        Ok(Session { client, notices })
    }

    /// Runs `sql` with the simple protocol (several statements allowed).
    pub(crate) async fn simple(&self, sql: &str) -> Outcome {
        match self.client.simple_query(sql).await {
            Ok(messages) => Outcome {
                rows: messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect(),
                error: None,
            },
            Err(err) => failed(err),
        }
    }

    /// Runs `sql` with the extended protocol (Parse/Bind/Describe/Execute).
    pub(crate) async fn extended(&self, sql: &str) -> Outcome {
        match self.client.query(sql, &[]).await {
            Ok(rows) => Outcome {
                rows: rows
                    .iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                row.get::<_, Option<Raw>>(i)
                                    .map(|r| r.0)
                                    .unwrap_or_else(|| "NULL".into())
                            })
                            .collect()
                    })
                    .collect(),
                error: None,
            },
            Err(err) => failed(err),
        }
    }

    pub(crate) async fn run(&self, extended: bool, sql: &str) -> Outcome {
        if extended {
            self.extended(sql).await
        } else {
            self.simple(sql).await
        }
    }

    pub(crate) fn notices(&self) -> String {
        self.notices.lock().unwrap().join("\n")
    }
}

fn futures_stream(
    connection: &mut tokio_postgres::Connection<
        tokio_postgres::Socket,
        tokio_postgres::tls::NoTlsStream,
    >,
) -> impl futures_util::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + '_ {
    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx))
}

use futures_util::StreamExt;

pub(crate) fn failed(err: tokio_postgres::Error) -> Outcome {
    let code = err
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| "none".into());
    let text = match err.as_db_error() {
        Some(db) => format!("{db:?}"),
        None => format!("{err:?}"),
    };
    Outcome {
        rows: Vec::new(),
        error: Some((code, text)),
    }
}

/// Panics if any hidden value appears in `shown` (values the caller wrote itself in `sql` may be
/// echoed, e.g. by EXPLAIN).
pub(crate) fn assert_clean(context: &str, sql: &str, shown: &str, hidden: &[String]) {
    for value in hidden.iter().filter(|v| !sql.contains(v.as_str())) {
        assert!(
            !shown.contains(value.as_str()),
            "{context}: hidden value {value:?} appears in {shown}"
        );
    }
}

pub(crate) fn outcome_text(outcome: &Outcome) -> String {
    format!("{:?} {:?}", outcome.rows, outcome.error)
}

#[tokio::test]
async fn dpo_gets_everything_unchanged_including_ddl() {
    let crm = Enforced::start().await;
    let dora = crm.connect("dora").await;
    let rows = dora
        .simple("SELECT tax_code, birth_date::text FROM contacts WHERE id = 1")
        .await;
    assert_eq!(rows.ok()[0], ["BRMTTV71M23F205K", "1971-08-23"]);
    let rows = dora.extended("SELECT condition FROM health_records").await;
    assert_eq!(rows.column(0), ["hypertension stage two"]);
    for sql in [
        "CREATE TABLE dpo_notes (id int PRIMARY KEY, note text)",
        "ALTER TABLE dpo_notes ADD COLUMN at date",
        "INSERT INTO dpo_notes VALUES (1, 'x', NULL)",
        "DROP TABLE dpo_notes",
        "SELECT set_config('maschera.region', 'south', false)",
    ] {
        dora.simple(sql).await.ok();
    }
    let count = dora.simple("SELECT count(*) FROM contacts").await;
    assert_eq!(count.ok()[0][0], "4");
    // A table the policy does not name is denied to restricted roles (unlisted_tables = "deny"),
    // before and after the proxy rereads the catalog.
    dora.simple("CREATE TABLE side_notes (id int, note text); INSERT INTO side_notes VALUES (1, 'private memo')")
        .await
        .ok();
    let sam = crm.connect("sam").await;
    let (code, message) = sam
        .simple("SELECT * FROM side_notes")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    assert!(message.contains("side_notes"), "{message}");
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log("policy reloaded", 1);
    let sam = crm.connect("sam").await;
    let (code, message) = sam
        .extended("SELECT * FROM side_notes")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    assert!(
        message.contains("side_notes") && !message.contains("private memo"),
        "{message}"
    );
}

#[tokio::test]
async fn each_role_sees_its_cells_of_the_matrix_in_both_protocols() {
    let crm = Enforced::start().await;
    let sam = crm.connect("sam").await;
    let tom = crm.connect("tom").await;
    let mia = crm.connect("mia").await;
    let ana = crm.connect("ana").await;
    for extended in [false, true] {
        // sales: plain values, birth date truncated to the year, tax code masked, NULL stays NULL.
        let rows = sam.run(extended,
            "SELECT id::text, first_name, email, birth_date::text, tax_code FROM contacts ORDER BY id",
        )
        .await;
        assert_eq!(
            rows.ok(),
            &[
                vec![
                    "1",
                    "Ottavio",
                    "ottavio.brambilla@posta.it",
                    "1971-01-01",
                    "************205K"
                ],
                vec!["3", "Ettore", "ettore.zanetti@posta.it", "NULL", "NULL"],
            ]
            .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>())
        );
        // support: masks, and dropped columns refused naming the column.
        let rows = tom
            .run(
                extended,
                "SELECT first_name, last_name, email, phone FROM contacts WHERE id = 1",
            )
            .await;
        assert_eq!(
            rows.ok()[0],
            ["Ottavio", "B.", "o***@posta.it", "************726"]
        );
        let (code, message) = tom
            .run(extended, "SELECT birth_date FROM contacts")
            .await
            .refused()
            .to_owned_pair();
        assert_eq!(code, "42501");
        assert!(message.contains("birth_date"), "{message}");
        // support: a denied table is refused naming the table.
        let (code, message) = tom
            .run(extended, "SELECT amount FROM deals")
            .await
            .refused()
            .to_owned_pair();
        assert_eq!(code, "42501");
        assert!(message.contains("deals"), "{message}");
        // marketing: only contacts with an active marketing consent; phone dropped.
        let rows = mia
            .run(
                extended,
                "SELECT id::text, last_name FROM contacts ORDER BY id",
            )
            .await;
        assert_eq!(rows.column(0), ["1", "4"]);
        let (code, message) = mia
            .run(extended, "SELECT phone FROM contacts")
            .await
            .refused()
            .to_owned_pair();
        assert_eq!(code, "42501");
        assert!(message.contains("phone"), "{message}");
        // analyst: pseudonyms (64 hex characters), equal in every table.
        let rows = ana.run(extended,
            "SELECT c.id, d.contact_id FROM contacts c JOIN deals d ON d.contact_id = c.id ORDER BY d.amount",
        )
        .await;
        assert_eq!(rows.ok().len(), 2, "{rows:?}");
        for row in rows.ok() {
            assert_eq!(row[0].len(), 64, "{row:?}");
            assert!(row[0].chars().all(|c| c.is_ascii_hexdigit()), "{row:?}");
            assert_eq!(row[0], row[1]);
        }
        let (code, message) = ana
            .run(extended, "SELECT first_name FROM contacts")
            .await
            .refused()
            .to_owned_pair();
        assert_eq!(code, "42501");
        assert!(message.contains("first_name"), "{message}");
        // Art. 9 and Art. 10 tables are denied to every restricted role.
        for session in [&sam, &tom, &mia, &ana] {
            let (code, message) = session
                .run(extended, "SELECT * FROM health_records")
                .await
                .refused()
                .to_owned_pair();
            assert_eq!(code, "42501");
            assert!(message.contains("health_records"), "{message}");
        }
    }
}

trait OwnedPair {
    fn to_owned_pair(&self) -> (String, String);
}

impl OwnedPair for (&str, &str) {
    fn to_owned_pair(&self) -> (String, String) {
        (self.0.to_owned(), self.1.to_owned())
    }
}

#[tokio::test]
async fn row_filters_follow_the_users_attributes() {
    let crm = Enforced::start().await;
    let sql = "SELECT id::text FROM contacts ORDER BY id";
    for (user, expected) in [
        ("sam", vec!["1", "3"]),
        ("sara", vec!["2"]),
        ("sol", vec![]),
    ] {
        let session = crm.connect(user).await;
        assert_eq!(session.simple(sql).await.column(0), expected, "{user}");
        assert_eq!(session.extended(sql).await.column(0), expected, "{user}");
    }
    let sara = crm.connect("sara").await;
    let deals = sara.simple("SELECT amount::text FROM deals").await;
    assert_eq!(deals.column(0), ["4242.42"]);
}

#[tokio::test]
async fn writes_follow_the_write_rules() {
    let crm = Enforced::start().await;
    let sam = crm.connect("sam").await;
    sam.simple(
        "INSERT INTO contacts (id, first_name, last_name, email, phone, region) \
         VALUES (50, 'Nuovo', 'Cliente', 'nuovo@posta.it', '+39 300 0000050', 'north')",
    )
    .await
    .ok();
    let (code, _) = sam
        .simple(
            "INSERT INTO contacts (id, first_name, last_name, email, phone, region) \
             VALUES (51, 'Altro', 'Cliente', 'altro@posta.it', '+39 300 0000051', 'south')",
        )
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(
        code, "42501",
        "a row outside the filter is refused by the table's row-level security"
    );
    let (code, message) = sam
        .simple("UPDATE contacts SET tax_code = 'XXXXXXXXXXXXXXXX' WHERE id = 1")
        .await
        .refused()
        .to_owned_pair();
    assert!(code == "42501" || code == "0A000", "{code}: {message}");
    let deleted = sam
        .client
        .execute("DELETE FROM contacts WHERE id = 2", &[])
        .await;
    assert_eq!(deleted.expect("delete outside the filter"), 0);
    let updated = sam
        .client
        .execute("UPDATE deals SET stage = 'negotiation' WHERE id = 1", &[])
        .await;
    assert_eq!(updated.expect("update of a visible deal"), 1);
    let (code, message) = sam
        .extended("INSERT INTO health_records (id, contact_id, condition) VALUES (9, 1, 'x')")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    assert!(message.contains("health_records"), "{message}");

    let mia = crm.connect("mia").await;
    for sql in [
        "INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (60, 3, 'marketing', now())",
        "UPDATE consents SET withdrawn_at = NULL",
    ] {
        let (code, message) = mia.simple(sql).await.refused().to_owned_pair();
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("consents"), "{message}");
    }
    let tom = crm.connect("tom").await;
    tom.simple(
        "INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (61, 3, 'newsletter', now())",
    )
    .await
    .ok();
    let (code, _) = tom
        .simple("DELETE FROM consents WHERE id = 61")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    let ana = crm.connect("ana").await;
    let (code, _) = ana
        .simple("UPDATE deals SET stage = 'x'")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    let dora = crm.connect("dora").await;
    let stage = dora.simple("SELECT stage FROM deals WHERE id = 1").await;
    assert_eq!(stage.column(0), ["negotiation"]);
    let consents = dora.simple("SELECT count(*) FROM consents").await;
    assert_eq!(consents.column(0), ["4"]);
}

/// What a bypass attempt may end in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Runs; the rows are checked for hidden values.
    Rows,
    /// Refused or failing with this SQLSTATE.
    Error(&'static str),
    /// Refused with 42501 or 0A000 (e.g. what sqlparser cannot parse).
    Refused,
    /// Either (the point is only that nothing hidden shows).
    Anything,
}

/// (user, statement, expected, also through the extended protocol).
const BYPASSES: &[(&str, &str, Expect, bool)] = &[
    (
        "sam",
        "SET maschera.region = 'south'",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT set_config('maschera.region', 'south', false)",
        Expect::Error("42501"),
        true,
    ),
    ("sam", "RESET maschera.region", Expect::Error("42501"), true),
    ("sam", "SET ROLE postgres", Expect::Error("42501"), true),
    (
        "sam",
        "SET SESSION AUTHORIZATION postgres",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SET search_path = pg_temp, public",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SET search_path = public; SELECT * FROM contacts; SELECT * FROM public.contacts",
        Expect::Rows,
        false,
    ),
    ("sam", "SELECT * FROM public.contacts", Expect::Rows, true),
    ("sam", "SELECT * FROM \"contacts\"", Expect::Rows, true),
    ("sam", "SELECT * FROM \"Contacts\"", Expect::Anything, true),
    (
        "sam",
        "SELECT * FROM U&\"cont\\0061cts\"",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "WITH contacts AS (SELECT * FROM public.contacts) SELECT * FROM contacts",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT email FROM contacts UNION SELECT condition FROM health_records",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT row_to_json(c)::text FROM contacts c",
        Expect::Rows,
        true,
    ),
    ("sam", "SELECT c::text FROM contacts c", Expect::Rows, true),
    (
        "sam",
        "SELECT c.id, x.email FROM contacts c, LATERAL (SELECT email FROM public.contacts d WHERE d.id <> c.id) x",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT id FROM contacts WHERE tax_code = 'SPSRSL88B54F839Q' OR tax_code = 'BRMTTV71M23F205K'",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT id FROM contacts WHERE (email || '')::int > 0",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "SELECT tax_code::int FROM contacts",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "COPY contacts FROM STDIN",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "PREPARE p AS SELECT * FROM contacts; EXECUTE p",
        Expect::Rows,
        false,
    ),
    (
        "sam",
        "BEGIN; DECLARE cur CURSOR FOR SELECT * FROM contacts; FETCH ALL FROM cur; COMMIT",
        Expect::Rows,
        false,
    ),
    (
        "sam",
        "SELECT query_to_xml('SELECT * FROM public.contacts', true, true, '')",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT * FROM pg_stats",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT query FROM pg_stat_activity",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT pg_read_file('/etc/passwd')",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT pg_terminate_backend(1)",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "EXPLAIN ANALYZE SELECT * FROM contacts",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "EXPLAIN SELECT * FROM contacts WHERE email = 'rosalba.esposito@posta.it'",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "CREATE TEMP TABLE contacts AS SELECT 1 AS id",
        Expect::Error("42501"),
        true,
    ),
    ("sam", "DO $$BEGIN PERFORM 1; END$$", Expect::Refused, true),
    (
        "sam",
        "SELECT $q$x$q$ || email /* comment */ FROM contacts -- trailing",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT E'\\x41' || first_name FROM contacts",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT * FROM maschera_sales.contacts",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "SELECT * FROM maschera_private.keys",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT * FROM pg_catalog.pg_statistic",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT table_to_xml('contacts', true, true, '')",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT ts_stat('SELECT to_tsvector(email) FROM public.contacts')",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT lo_import('/etc/passwd')",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT pg_cancel_backend(1)",
        Expect::Error("42501"),
        true,
    ),
    (
        "sam",
        "SELECT (SELECT string_agg(email || tax_code, ',') FROM public.contacts)",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT * FROM contacts c WHERE c = c",
        Expect::Anything,
        true,
    ),
    ("sam", "TABLE contacts", Expect::Anything, true),
    (
        "sam",
        "VALUES ((SELECT max(tax_code) FROM contacts))",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT * FROM contacts WHERE id = 2",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "UPDATE contacts SET city = city WHERE id = 2 RETURNING *",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "WITH gone AS (DELETE FROM public.contacts WHERE region = 'south' RETURNING *) SELECT * FROM gone",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "SELECT * FROM pg_views WHERE viewname = 'contacts'",
        Expect::Anything,
        true,
    ),
    (
        "sam",
        "SELECT email FROM contacts WHERE region = 'south' OR true",
        Expect::Rows,
        true,
    ),
    (
        "sam",
        "SELECT first_name FROM contacts ORDER BY (tax_code = 'SPSRSL88B54F839Q')",
        Expect::Rows,
        true,
    ),
    (
        "mia",
        "WITH x AS (INSERT INTO consents (id, contact_id, purpose, granted_at) VALUES (70, 3, 'marketing', now()) RETURNING id) SELECT * FROM x",
        Expect::Error("42501"),
        true,
    ),
    (
        "mia",
        "SELECT c.first_name FROM contacts c JOIN public.consents k ON k.contact_id = c.id",
        Expect::Rows,
        true,
    ),
    (
        "tom",
        "SELECT id FROM contacts WHERE email LIKE 'otta%'",
        Expect::Rows,
        true,
    ),
    (
        "tom",
        "SELECT id FROM contacts WHERE phone = '+39 331 9081726'",
        Expect::Rows,
        true,
    ),
    (
        "tom",
        "SELECT last_name::int FROM contacts",
        Expect::Anything,
        true,
    ),
    ("tom", "SELECT * FROM contacts", Expect::Rows, true),
    ("mia", "SELECT * FROM contacts", Expect::Rows, true),
    ("mia", "SELECT i.* FROM interactions i", Expect::Rows, true),
    (
        "mia",
        "SELECT notes FROM interactions",
        Expect::Error("42501"),
        true,
    ),
    ("ana", "SELECT * FROM contacts", Expect::Rows, true),
    ("ana", "SELECT * FROM tickets", Expect::Rows, true),
    (
        "ana",
        "SELECT * FROM judicial_records",
        Expect::Error("42501"),
        true,
    ),
];

#[tokio::test]
async fn no_bypass_attempt_shows_a_hidden_value() {
    let crm = Enforced::start().await;
    let mut failures = Vec::new();
    let mut hidden_by_role = std::collections::BTreeMap::new();
    for &(user, sql, expect, extended) in BYPASSES {
        let role = USERS.iter().find(|u| u.0 == user).map(|u| u.1).unwrap();
        if !hidden_by_role.contains_key(role) {
            hidden_by_role.insert(role, crm.hidden(role).await);
        }
        let hidden = &hidden_by_role[role];
        let protocols: &[bool] = if extended { &[false, true] } else { &[false] };
        for &extended in protocols {
            // A fresh session per statement: one attempt cannot spoil the next.
            let session = crm.connect(user).await;
            let outcome = if extended {
                session.extended(sql).await
            } else {
                session.simple(sql).await
            };
            let context = format!(
                "{user} {} `{sql}`",
                if extended { "extended" } else { "simple" }
            );
            assert_clean(&context, sql, &outcome_text(&outcome), hidden);
            assert_clean(&context, sql, &session.notices(), hidden);
            let fits = match (expect, &outcome.error) {
                (Expect::Rows, None) | (Expect::Anything, _) => true,
                (Expect::Error(want), Some((code, _))) => want == code,
                (Expect::Refused, Some((code, _))) => code == "42501" || code == "0A000",
                _ => false,
            };
            if !fits {
                failures.push(format!("{context}: expected {expect:?}, got {outcome:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn attributes_survive_reset_and_discard_and_cannot_be_set() {
    let crm = Enforced::start().await;
    let sam = crm.connect("sam").await;
    let count = "SELECT count(*) FROM contacts";
    assert_eq!(sam.simple(count).await.column(0), ["2"]);
    for sql in [
        "SET maschera.region = 'south'",
        "SELECT set_config('maschera.region', 'south', false)",
        "RESET maschera.region",
        "RESET ALL",
        "DISCARD ALL",
        "SET application_name = 'orm'",
        "SET TimeZone = 'UTC'",
    ] {
        let _ = sam.simple(sql).await;
        assert_eq!(sam.simple(count).await.column(0), ["2"], "after {sql}");
    }
    let shown = sam
        .simple("SELECT current_setting('maschera.region')")
        .await;
    assert_eq!(shown.column(0), ["north"]);
    // Startup options that would change a setting refuse the login, naming what was refused.
    let uri = format!("{}?options=-c%20maschera.region%3Dsouth", crm.uri("sam"));
    let err = Session::try_connect(&uri)
        .await
        .err()
        .expect("refused login");
    let code = err.code().map(|c| c.code().to_owned());
    assert!(
        matches!(code.as_deref(), Some("0A000" | "42501")),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains("options"), "{err:?}");
    let (ok, _, stderr) = crm.psql("sam", "SELECT 1");
    assert!(ok, "{stderr}");
    let out = Command::new(crm.pg.bin_dir().join("psql"))
        .arg(crm.uri("sam"))
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM contacts"])
        .env("PGOPTIONS", "-c search_path=public")
        .output()
        .expect("psql");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("options"));
}

#[tokio::test]
async fn unknown_role_is_refused_at_login() {
    let crm = Enforced::start().await;
    let err = Session::try_connect(&crm.uri("uma"))
        .await
        .err()
        .expect("login of a user with an unknown role");
    assert_eq!(err.code().map(|c| c.code()), Some("28000"), "{err:?}");
    assert!(format!("{err:?}").contains("intern"), "{err:?}");
    assert!(
        crm.proxy.log().contains("cannot log in"),
        "the proxy warns at start about users whose role the policy does not name"
    );
    // The proxy is still serving the others.
    let sam = crm.connect("sam").await;
    assert_eq!(sam.simple("SELECT 1").await.column(0), ["1"]);
}

#[tokio::test]
async fn psql_sees_the_masked_matrix_and_copy_out_is_masked() {
    let crm = Enforced::start().await;
    let (ok, out, err) = crm.psql(
        "tom",
        "SELECT first_name, last_name, email, phone FROM contacts ORDER BY id",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("Ottavio|B.|o***@posta.it|************726")
    );
    let hidden = crm.hidden("sales").await;
    let (ok, out, err) = crm.psql("sam", "COPY contacts TO STDOUT");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("************205K"), "{out}");
    let first: Vec<&str> = out.lines().next().unwrap_or_default().split('\t').collect();
    assert_eq!(
        first.len(),
        12,
        "every column of the view, in table order: {out}"
    );
    assert_eq!(&first[..3], ["1", "Ottavio", "Brambilla"], "{out}");
    assert_clean("psql COPY TO", "", &out, &hidden);
    let (ok, out, err) = crm.psql(
        "sam",
        "COPY (SELECT tax_code, email FROM public.contacts) TO STDOUT",
    );
    assert!(ok, "{err}");
    assert_clean("psql COPY (SELECT) TO", "", &out, &hidden);
    let (ok, out, err) = crm.psql("tom", "\\d contacts");
    assert!(ok, "psql \\d contacts: {err}");
    assert!(out.contains("last_name"), "{out}");
    assert!(!out.contains("birth_date"), "{out}");
    let (ok, _, err) = crm.psql("sam", "SELECT * FROM health_records");
    assert!(!ok);
    assert!(err.contains("health_records"), "{err}");
    assert_clean("psql refusal", "", &err, &hidden);
}

#[tokio::test]
async fn copy_out_through_the_extended_protocol_is_masked() {
    let crm = Enforced::start().await;
    let sam = crm.connect("sam").await;
    let stream = sam
        .client
        .copy_out("COPY contacts (id, tax_code) TO STDOUT")
        .await
        .expect("COPY TO");
    let chunks: Vec<_> = stream.collect().await;
    let mut text = String::new();
    for chunk in chunks {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("copy data")));
    }
    assert_eq!(text, "1\t************205K\n3\t\\N\n");
}

#[tokio::test]
async fn policy_reloads_on_change_and_keeps_the_old_one_when_invalid() {
    let crm = Enforced::start().await;
    let before = crm.connect("tom").await;
    assert_eq!(
        before
            .simple("SELECT first_name FROM contacts WHERE id = 1")
            .await
            .column(0),
        ["Ottavio"]
    );
    // Support loses first_name (the views in the database stay as they are: the proxy refuses).
    let text = std::fs::read_to_string(&crm.policy).unwrap().replace(
        "[roles.support.tables.contacts]\nshow = [\"id\", \"first_name\"]",
        "[roles.support.tables.contacts]\nshow = [\"id\"]",
    );
    std::fs::write(&crm.policy, text).unwrap();
    crm.proxy.wait_for_log("policy reloaded", 1);
    let after = crm.connect("tom").await;
    let (code, message) = after
        .simple("SELECT first_name FROM contacts")
        .await
        .refused()
        .to_owned_pair();
    assert_eq!(code, "42501");
    assert!(message.contains("first_name"), "{message}");
    // The session that started before keeps the policy it started with.
    assert_eq!(
        before
            .simple("SELECT first_name FROM contacts WHERE id = 1")
            .await
            .column(0),
        ["Ottavio"]
    );
    // An invalid file keeps the current policy and says why in the log.
    std::fs::write(&crm.policy, "[roles.sales\n").unwrap();
    crm.proxy.wait_for_log("policy reload failed", 1);
    let still = crm.connect("tom").await;
    assert_eq!(
        still
            .simple("SELECT id::text FROM contacts ORDER BY id LIMIT 1")
            .await
            .column(0),
        ["1"]
    );
    assert_eq!(
        still
            .simple("SELECT first_name FROM contacts")
            .await
            .refused()
            .0,
        "42501"
    );
    // SIGHUP reloads too (here: fails again, still keeping the policy).
    crm.proxy.signal(libc::SIGHUP);
    crm.proxy.wait_for_log("SIGHUP", 1);
}

#[test]
fn the_proxy_refuses_to_start_with_an_invalid_policy() {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_crm_schema(DB).expect("CRM schema");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[tables.contacts.columns]\nemail = \"contact\"\n[roles.sales.tables.contacts]\nshow = [\"emial\"]\n",
    )
    .unwrap();
    let options = ProxyOptions {
        database: DB.into(),
        policy: format!(
            "file = {:?}\ncredentials = {:?}",
            policy.display().to_string(),
            dir.path().join("logins.toml").display().to_string()
        ),
        ..ProxyOptions::default()
    };
    let err = match Proxy::start(&pg, options) {
        Ok(_) => panic!("the proxy started with an invalid policy"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("policy"), "{err}");
    assert!(err.contains("emial"), "{err}");
}

#[tokio::test]
async fn statements_of_restricted_roles_leave_access_log_records_without_values() {
    let crm = Enforced::start_from(Enforced::fixture().access_log("enforce")).await;
    let sam = crm.connect("sam").await;
    sam.simple("SELECT email, tax_code FROM contacts WHERE email <> 'ottavio.brambilla@posta.it'")
        .await
        .ok();
    sam.simple("SELECT * FROM health_records").await.refused();
    let rows = sam
        .client
        .query("SELECT first_name FROM contacts WHERE id = $1", &[&1i64])
        .await
        .expect("extended query");
    assert_eq!(rows.len(), 1);
    let log_dir = crm.pg.dir().join("audit");
    let records = access_log(&log_dir, "statement", 3);
    let text = serde_json::to_string(&records).unwrap();
    assert_eq!(records.len(), 3, "{text}");
    assert_clean("access log", "", &text, &crm.hidden("sales").await);
    assert!(
        !text.contains("ottavio.brambilla"),
        "literal in the log: {text}"
    );
    // How a statement sent upstream ended is in its access record or in an `outcome` record
    // naming it (the refusal, never sent, has one record only).
    let outcome_of = |record: &serde_json::Value| completion_of(&log_dir, record);
    let read = &records[0];
    assert_eq!(read["role"], "sales", "{read}");
    assert_eq!(read["user"], "sam", "{read}");
    let read_outcome = outcome_of(read);
    assert_eq!(read_outcome["rows"], 1, "{read_outcome}");
    assert_eq!(read_outcome["outcome"]["result"], "ok", "{read_outcome}");
    let tables = read["tables"].to_string();
    assert!(
        tables.contains("contacts") && tables.contains("tax_code"),
        "{read}"
    );
    assert!(
        tables.contains("masked") && tables.contains("national_identifier"),
        "{read}"
    );
    let refused = &records[1];
    assert_eq!(refused["outcome"]["result"], "refused", "{refused}");
    assert_eq!(refused["outcome"]["sqlstate"], "42501", "{refused}");
    assert!(
        refused["tables"].to_string().contains("health_records"),
        "{refused}"
    );
    let extended = &records[2];
    assert_eq!(outcome_of(extended)["rows"], 1, "{extended}");
    assert_eq!(extended["statement_kind"], "select", "{extended}");
    // A policy reload is recorded too.
    let text = std::fs::read_to_string(&crm.policy).unwrap();
    std::fs::write(&crm.policy, format!("{text}\n# reviewed\n")).unwrap();
    let reloads = access_log(&log_dir, "policy_reload", 1);
    assert_eq!(reloads[0]["outcome"]["result"], "ok", "{}", reloads[0]);
}

/// Rows, outcome and duration of a statement sent upstream: its access record when the writer took
/// that after PostgreSQL answered, else the `outcome` record that names it (waited for).
fn completion_of(dir: &Path, record: &serde_json::Value) -> serde_json::Value {
    if record["outcome"]["result"] != "unknown" {
        return record.clone();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let follow_ups = access_log(dir, "outcome", 0);
        if let Some(found) = follow_ups
            .into_iter()
            .find(|o| o["statement_seq"] == record["seq"])
        {
            return found;
        }
        assert!(Instant::now() < deadline, "no outcome for {record}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records of `kind` in the access log folder, waiting until there are at least `count`.
fn access_log(dir: &Path, kind: &str, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            records.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|r| r["event"] == kind),
            );
        }
        if records.len() >= count || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `message` on a raw session and returns the ErrorResponse fields it gets before ReadyForQuery.
async fn raw_error(stream: &mut tokio::net::TcpStream, message: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    stream.write_all(message).await.expect("send");
    let mut error = String::new();
    loop {
        let (tag, body) = maschera_tests::proxy::read_message(stream).await;
        match tag {
            b'E' => error = String::from_utf8_lossy(&body).replace('\0', " "),
            b'Z' => return error,
            _ => {}
        }
    }
}

#[tokio::test]
async fn function_calls_and_non_utf8_statements_are_refused() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;
    let crm = Enforced::start().await;
    let mut raw =
        maschera_tests::proxy::raw_login(crm.proxy.port(), "sam", &crm_password("sam"), DB).await;
    // FunctionCall of lo_open (oid 952) with two int arguments.
    let mut call = BytesMut::new();
    call.extend_from_slice(b"F");
    let body: Vec<u8> = [
        &952u32.to_be_bytes()[..],
        &1i16.to_be_bytes(),
        &1i16.to_be_bytes(),
        &2i16.to_be_bytes(),
        &4i32.to_be_bytes(),
        &1i32.to_be_bytes(),
        &4i32.to_be_bytes(),
        &0x20000i32.to_be_bytes(),
        &1i16.to_be_bytes(),
    ]
    .concat();
    call.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    call.extend_from_slice(&body);
    let error = raw_error(&mut raw, &call).await;
    assert!(
        error.contains("0A000") && error.contains("function call"),
        "{error}"
    );
    // A Query whose text is not UTF-8.
    let mut query = BytesMut::new();
    let text = b"SELECT '\xff\xfe' FROM contacts\0";
    query.extend_from_slice(b"Q");
    query.extend_from_slice(&(text.len() as i32 + 4).to_be_bytes());
    query.extend_from_slice(text);
    let error = raw_error(&mut raw, &query).await;
    assert!(
        error.contains("0A000") && error.contains("UTF-8"),
        "{error}"
    );
    // The session goes on.
    let mut ok = BytesMut::new();
    frontend::query("SELECT count(*) FROM contacts", &mut ok).unwrap();
    assert_eq!(raw_error(&mut raw, &ok).await, "");
}

#[tokio::test]
async fn psycopg_sees_masks_and_refusals() {
    let crm = Enforced::start().await;
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    row = conn.execute("select last_name, email from contacts where id = %s", [1]).fetchone()
    assert row == ("B.", "o***@posta.it"), row
    try:
        conn.execute("select birth_date from contacts")
        raise SystemExit("birth_date was not refused")
    except psycopg.errors.InsufficientPrivilege as e:
        assert "birth_date" in str(e), str(e)
    conn.rollback()
    with psycopg.ClientCursor(conn) as cur:
        cur.execute("select count(*) from contacts where email = %s", ["ottavio.brambilla@posta.it"])
        assert cur.fetchone()[0] == 0
print("psycopg ok")
"#;
    let stdout = maschera_tests::clients::python(script, &[&crm.uri("tom")]);
    assert!(stdout.contains("psycopg ok"), "psycopg: {stdout}");
}

#[tokio::test]
async fn dpo_schema_changes_on_policy_tables_rebuild_the_views() {
    let crm = Enforced::start().await;
    let dora = crm.connect("dora").await;
    dora.simple("ALTER TABLE contacts DROP COLUMN last_activity_at")
        .await
        .ok();
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 1);
    dora.simple("BEGIN; ALTER TABLE contacts ALTER COLUMN city TYPE varchar(80); COMMIT")
        .await
        .ok();
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 2);
    let tom = crm.connect("tom").await;
    let row = tom
        .extended("SELECT email, city FROM contacts WHERE id = 1")
        .await;
    assert_eq!(row.ok()[0], ["o***@posta.it", "Milano"]);
    let gone = tom.simple("SELECT last_activity_at FROM contacts").await;
    assert!(gone.error.is_some(), "{gone:?}");
    let sam = crm.connect("sam").await;
    sam.simple("INSERT INTO deals (id, contact_id, amount, stage) VALUES (9, 1, 5, 'open')")
        .await
        .ok();
    // A failing change leaves the views in place.
    let failed = dora
        .simple("ALTER TABLE contacts ALTER COLUMN city TYPE int")
        .await;
    assert!(failed.error.is_some());
    // (the proxy rebuilds after any ALTER of a policy table, failed or not)
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 3);
    assert_eq!(
        tom.simple("SELECT city FROM contacts WHERE id = 1")
            .await
            .column(0),
        ["Milano"]
    );
}

/// `name:type` of each column of `role`'s view of `table`, read by an unrestricted session.
async fn view_columns(dpo: &Session, role: &str, table: &str) -> Vec<String> {
    dpo.simple(&format!(
        "SELECT column_name || ':' || data_type FROM information_schema.columns \
         WHERE table_schema = 'maschera_{role}' AND table_name = '{table}' ORDER BY ordinal_position"
    ))
    .await
    .column(0)
}

#[tokio::test]
async fn dpo_schema_changes_recompile_the_views_inside_the_transaction() {
    let crm = Enforced::start().await;
    let dora = crm.connect("dora").await;
    let before = view_columns(&dora, "support", "contacts").await;
    for column in ["city:text", "last_activity_at:timestamp with time zone"] {
        assert!(before.contains(&column.to_string()), "{before:?}");
    }
    dora.simple("BEGIN").await.ok();
    // Simple protocol, then a Parse of the DDL (extended protocol).
    dora.simple("ALTER TABLE contacts DROP COLUMN last_activity_at")
        .await
        .ok();
    dora.extended("ALTER TABLE contacts ALTER COLUMN city TYPE varchar(80)")
        .await
        .ok();
    for role in ["support", "sales", "marketing"] {
        let inside = view_columns(&dora, role, "contacts").await;
        assert!(
            inside.contains(&"city:character varying".to_string())
                && !inside.iter().any(|c| c.starts_with("last_activity_at")),
            "views of {role} inside the transaction: {inside:?}"
        );
    }
    dora.simple("COMMIT").await.ok();
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 1);
    let tom = crm.connect("tom").await;
    let row = tom
        .extended("SELECT email, city FROM contacts WHERE id = 1")
        .await;
    assert_eq!(row.ok()[0], ["o***@posta.it", "Milano"]);
    assert!(
        tom.simple("SELECT last_activity_at FROM contacts")
            .await
            .error
            .is_some()
    );
    let sam = crm.connect("sam").await;
    let rows = sam
        .simple("SELECT first_name, city FROM contacts ORDER BY id")
        .await;
    assert_eq!(rows.ok(), &[["Ottavio", "Milano"], ["Ettore", "Bergamo"]]);

    // Rolled back: the old views are back, with the column.
    let before = view_columns(&dora, "support", "contacts").await;
    dora.simple("BEGIN").await.ok();
    dora.simple("ALTER TABLE contacts DROP COLUMN city")
        .await
        .ok();
    let inside = view_columns(&dora, "support", "contacts").await;
    assert!(
        !inside.iter().any(|c| c.starts_with("city:")) && inside.len() + 1 == before.len(),
        "{inside:?}"
    );
    dora.simple("ROLLBACK").await.ok();
    assert_eq!(view_columns(&dora, "support", "contacts").await, before);
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 2);
    assert_eq!(view_columns(&dora, "support", "contacts").await, before);
    let tom = crm.connect("tom").await;
    assert_eq!(
        tom.simple("SELECT city FROM contacts WHERE id = 1")
            .await
            .column(0),
        ["Milano"]
    );
}

#[tokio::test]
async fn dropping_a_column_the_policy_names_fails_closed_and_is_reported_as_drift() {
    let crm = Enforced::start().await;
    let dora = crm.connect("dora").await;
    dora.simple("ALTER TABLE contacts DROP COLUMN tax_code")
        .await
        .ok();
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 1);
    let sales = view_columns(&dora, "sales", "contacts").await;
    assert!(
        sales.contains(&"first_name:text".to_string())
            && !sales.iter().any(|c| c.starts_with("tax_code")),
        "{sales:?}"
    );
    let sam = crm.connect("sam").await;
    let rows = sam
        .extended("SELECT first_name FROM contacts ORDER BY id")
        .await;
    assert_eq!(rows.column(0), ["Ottavio", "Ettore"]);
    let gone = sam.simple("SELECT tax_code FROM contacts").await;
    let (_, message) = gone.refused();
    assert!(
        message.contains("tax_code") && !message.contains("BRMTTV"),
        "{message}"
    );
    let out = Command::new(maschera_bin())
        .args(["policy", "check"])
        .arg(&crm.policy)
        .args(["--upstream", &crm.pg.uri(DB)])
        .output()
        .expect("run maschera policy check");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("column `tax_code` does not exist"),
        "{report}"
    );
}

#[tokio::test]
async fn do_blocks_show_and_the_roles_own_view_schema() {
    let crm = Enforced::start().await;
    let sam = crm.connect("sam").await;
    for extended in [false, true] {
        let (code, message) = sam
            .run(extended, "/* x */ DO $$ BEGIN PERFORM 1; END $$")
            .await
            .refused()
            .to_owned_pair();
        assert_eq!(code, "42501", "{message}");
        assert!(message.contains("DO blocks"), "{message}");
        assert_eq!(
            sam.run(extended, "SHOW maschera.region").await.column(0),
            ["north"]
        );
        assert_eq!(
            sam.run(
                extended,
                "SELECT first_name FROM maschera_sales.contacts ORDER BY id"
            )
            .await
            .column(0),
            ["Ottavio", "Ettore"]
        );
        for (sql, object) in [
            (
                "SELECT * FROM maschera_support.contacts",
                "maschera_support.contacts",
            ),
            (
                "SELECT * FROM maschera_private.keys",
                "maschera_private.keys",
            ),
            (
                "SELECT * FROM maschera_sales.health_records",
                "maschera_sales.health_records",
            ),
        ] {
            let (code, message) = sam.run(extended, sql).await.refused().to_owned_pair();
            assert_eq!(code, "42501", "{sql}: {message}");
            assert!(message.contains(object), "{sql}: {message}");
        }
    }
    let sara = crm.connect("sara").await;
    assert_eq!(
        sara.simple("SHOW maschera.region").await.column(0),
        ["south"]
    );
    let (ok, out, err) = crm.psql("sam", "SHOW maschera.region");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "north");
}

#[tokio::test]
async fn the_catalog_connection_uses_the_upstream_tls_settings() {
    let certs = tempfile::Builder::new()
        .prefix("maschera-pg-certs-")
        .tempdir()
        .unwrap();
    let (pg, _) =
        maschera_tests::proxy::start_tls_pg(certs.path()).expect("start PostgreSQL with TLS");
    // Once the CRM and the policy are in place, PostgreSQL accepts TCP logins over TLS only.
    let only_tls = |pg: &PgServer| {
        let hba = pg.dir().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(&hba, format!("hostnossl all all all reject\n{old}")).unwrap();
        pg.execute("SELECT pg_reload_conf()").expect("reload");
    };
    let fixture = Enforced::fixture()
        .on(pg)
        .before_proxy(only_tls)
        .config(|options| options.upstream_tls = "require".into());
    let crm = Enforced::start_from(fixture).await;
    let sam = crm.connect("sam").await;
    let row = sam
        .simple("SELECT first_name, tax_code FROM contacts WHERE id = 1")
        .await;
    assert_eq!(row.ok()[0], ["Ottavio", "************205K"]);
    // A schema change is rebuilt over the same kind of connection.
    let dora = crm.connect("dora").await;
    dora.simple("ALTER TABLE contacts DROP COLUMN last_activity_at")
        .await
        .ok();
    crm.proxy
        .wait_for_log("views recompiled after a schema change", 1);
}
