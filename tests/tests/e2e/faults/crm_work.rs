//! The mixed reference-CRM work of the load and reload tests: per demo user, a few statements of
//! its role (simple and extended protocol, reads, a write, one expected refusal) and what each must
//! give back, checked on every run. Not for: the whole visibility matrix (see `enforce`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

/// Text cells of a result (NULL as `None`).
type Rows = Vec<Vec<Option<String>>>;

/// What a statement must give back.
enum Expect {
    /// Rows that pass the check.
    Rows(fn(&Rows) -> bool),
    /// Refused with 42501 and a message naming this.
    Refused(&'static str),
}

/// One statement of a role's work.
struct Step {
    sql: &'static str,
    /// Extended protocol (a statement prepared once per session, `$1` bound to a contact id);
    /// otherwise the simple protocol.
    extended: bool,
    expect: Expect,
}

const fn step(sql: &'static str, extended: bool, expect: Expect) -> Step {
    Step {
        sql,
        extended,
        expect,
    }
}

fn one_row(rows: &Rows) -> bool {
    rows.len() == 1
}

fn any(_: &Rows) -> bool {
    true
}

/// Cell `column` of every row passes `check` (NULL passes).
fn each(rows: &Rows, column: usize, check: impl Fn(&str) -> bool) -> bool {
    rows.iter().all(|row| {
        row.get(column)
            .is_some_and(|cell| cell.as_deref().is_none_or(&check))
    })
}

const DPO: &[Step] = &[
    step(
        "SELECT tax_code::text, first_name FROM contacts WHERE id = $1",
        true,
        Expect::Rows(|rows| one_row(rows) && each(rows, 0, |t| !t.contains('*'))),
    ),
    step(
        "SELECT count(*) FROM health_records",
        false,
        Expect::Rows(one_row),
    ),
    step(
        "UPDATE contacts SET last_activity_at = now() WHERE id = $1",
        true,
        Expect::Rows(any),
    ),
];

const SALES: &[Step] = &[
    step(
        "SELECT region::text, tax_code::text FROM contacts WHERE id = $1",
        true,
        Expect::Rows(|rows| rows.len() <= 1 && each(rows, 1, |t| t.starts_with("************"))),
    ),
    step(
        "SELECT count(DISTINCT region) FROM contacts",
        false,
        Expect::Rows(|rows| rows == &vec![vec![Some("1".to_owned())]]),
    ),
    step(
        "SELECT condition FROM health_records",
        true,
        Expect::Refused("health_records"),
    ),
    step(
        "SELECT d.stage, count(*) FROM deals d JOIN contacts c ON c.id = d.contact_id GROUP BY d.stage",
        false,
        Expect::Rows(any),
    ),
];

const MARKETING: &[Step] = &[
    step(
        "SELECT email::text, birth_date::text FROM contacts WHERE id = $1",
        true,
        Expect::Rows(|rows| rows.len() <= 1 && each(rows, 1, |d| d.ends_with("-01-01"))),
    ),
    step(
        "SELECT count(*) FROM interactions",
        false,
        Expect::Rows(one_row),
    ),
    step("SELECT amount FROM deals", false, Expect::Refused("deals")),
];

const SUPPORT: &[Step] = &[
    step(
        "SELECT last_name::text, phone::text FROM contacts WHERE id = $1",
        true,
        Expect::Rows(|rows| {
            one_row(rows)
                && each(rows, 0, |n| n.ends_with('.'))
                && each(rows, 1, |p| p.starts_with('*'))
        }),
    ),
    step(
        "SELECT status, count(*) FROM tickets GROUP BY status",
        false,
        Expect::Rows(any),
    ),
    step(
        "SELECT birth_date FROM contacts",
        true,
        Expect::Refused("birth_date"),
    ),
];

const ANALYST: &[Step] = &[
    step(
        "SELECT id, region::text FROM contacts WHERE id IS NOT NULL ORDER BY created_at LIMIT 3",
        true,
        Expect::Rows(|rows| {
            rows.len() == 3
                && each(rows, 0, |id| {
                    id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())
                })
        }),
    ),
    step(
        "SELECT c.region, count(*) FROM contacts c JOIN deals d ON d.contact_id = c.id GROUP BY c.region",
        false,
        Expect::Rows(any),
    ),
    step(
        "SELECT first_name FROM contacts",
        false,
        Expect::Refused("first_name"),
    ),
];

/// The work of a demo user's role.
fn steps(user: &str) -> &'static [Step] {
    match user {
        "dora" => DPO,
        "sam" | "sara" => SALES,
        "mia" => MARKETING,
        "tom" => SUPPORT,
        "ana" => ANALYST,
        other => panic!("no CRM work for user {other}"),
    }
}

/// What the work of some sessions gave.
#[derive(Debug, Default)]
pub struct Work {
    /// Statements that gave what they must (results and refusals).
    pub statements: u64,
    /// Of those, the expected refusals.
    pub refusals: u64,
    /// Anything else: an error other than the expected refusal, or wrong rows (first 20).
    pub unexpected: Vec<String>,
    /// How many unexpected outcomes, in all.
    pub unexpected_count: u64,
}

impl Work {
    pub fn add(&mut self, other: Work) {
        self.statements += other.statements;
        self.refusals += other.refusals;
        self.unexpected_count += other.unexpected_count;
        let room = 20usize.saturating_sub(self.unexpected.len());
        self.unexpected
            .extend(other.unexpected.into_iter().take(room));
    }

    fn unexpected(&mut self, what: String) {
        self.unexpected_count += 1;
        if self.unexpected.len() < 20 {
            self.unexpected.push(what);
        }
    }
}

/// Runs `user`'s work on `client` in a loop (a pause of `pause` between rounds) until `stop`, or
/// `rounds` rounds, or the connection closes. Contact ids go round `1..=contacts` from `seed`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    user: &str,
    contacts: u64,
    seed: u64,
    rounds: Option<u64>,
    pause: Duration,
    stop: &AtomicBool,
    work: &mut Work,
) {
    let steps = steps(user);
    let mut prepared: Vec<Option<Statement>> = Vec::new();
    for step in steps {
        let statement = match (step.extended, &step.expect) {
            (true, Expect::Rows(_)) => match client.prepare(step.sql).await {
                Ok(statement) => Some(statement),
                Err(err) => {
                    work.unexpected(format!("{user}: prepare {}: {err}", step.sql));
                    return;
                }
            },
            _ => None,
        };
        prepared.push(statement);
    }
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && rounds.is_none_or(|r| round < r) {
        let id = (seed + round * 7919) % contacts + 1;
        for (step, statement) in steps.iter().zip(&prepared) {
            let result = execute(client, step, statement.as_ref(), id as i64).await;
            match (&step.expect, result) {
                (Expect::Rows(check), Ok(rows)) if check(&rows) => work.statements += 1,
                (Expect::Rows(_), Ok(rows)) => {
                    work.unexpected(format!("{user}: {}: wrong rows {rows:?}", step.sql))
                }
                (Expect::Refused(name), Err(err))
                    if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
                        && err
                            .as_db_error()
                            .is_some_and(|e| e.message().contains(name)) =>
                {
                    work.statements += 1;
                    work.refusals += 1;
                }
                (_, Err(err)) if err.is_closed() => {
                    work.unexpected(format!("{user}: {}: connection closed: {err}", step.sql));
                    return;
                }
                (_, Err(err)) => work.unexpected(format!("{user}: {}: {err:?}", step.sql)),
                (Expect::Refused(_), Ok(rows)) => {
                    work.unexpected(format!("{user}: {}: not refused, rows {rows:?}", step.sql))
                }
            }
            super::STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
        tokio::time::sleep(pause).await;
    }
}

async fn execute(
    client: &Client,
    step: &Step,
    statement: Option<&Statement>,
    id: i64,
) -> Result<Rows, tokio_postgres::Error> {
    if !step.extended {
        let messages = client.simple_query(step.sql).await?;
        return Ok(maschera_tests::clients::rows_as_text(&messages));
    }
    let rows = match statement {
        Some(statement) if statement.params().is_empty() => client.query(statement, &[]).await?,
        Some(statement) => client.query(statement, &[&id]).await?,
        None => client.query(step.sql, &[]).await?,
    };
    Ok(rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect()
        })
        .collect())
}
