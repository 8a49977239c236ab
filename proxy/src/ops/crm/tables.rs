//! The rows of each CRM table, written in COPY text format: for each contact, the rows of one table
//! that belong to it. Each (table, contact) pair has its own random stream, so every table can be
//! generated on its own and still match the others. Not for: talking to PostgreSQL (see `load`).

use super::people::{self, CONTACTS, CRM_SPAN, CRM_START, Person};
use super::rng::Rng;
use crate::ops::calendar::{write_date, write_timestamp};
use std::cell::OnceCell;
use std::fmt::Write;

/// The contact that rows belong to: its id and creation time are cheap; the whole person is generated
/// only when a row needs it (a note quoting the phone number, ...), which keeps big loads fast.
pub struct Contact {
    seed: u64,
    pub id: u64,
    person: OnceCell<Person>,
}

impl Contact {
    fn new(seed: u64, id: u64) -> Self {
        Self {
            seed,
            id,
            person: OnceCell::new(),
        }
    }

    fn created_at(&self) -> i64 {
        people::created_at(self.seed, self.id)
    }

    fn person(&self) -> &Person {
        self.person
            .get_or_init(|| Person::generate(self.seed, self.id))
    }
}

/// One table of the reference CRM: its name, the columns the generator fills, and the function that
/// appends the rows of one contact (advancing the table's id counter).
pub struct Table {
    pub name: &'static str,
    pub columns: &'static str,
    tag: u64,
    rows: fn(&mut Rng, &Contact, &mut u64, &mut String),
}

impl Table {
    /// Appends the rows of contact `contact_id` to `out`; `next_id` is this table's next row id.
    pub fn write_rows(&self, seed: u64, contact_id: u64, next_id: &mut u64, out: &mut String) {
        let mut rng = Rng::for_row(seed, self.tag, contact_id);
        (self.rows)(&mut rng, &Contact::new(seed, contact_id), next_id, out);
    }
}

/// All tables, parents first.
pub const TABLES: &[Table] = &[
    Table {
        name: "contacts",
        columns: "id, first_name, last_name, email, phone, birth_date, tax_code, street_address, city, region, \
                  created_at, last_activity_at",
        tag: CONTACTS,
        rows: contact_row,
    },
    Table {
        name: "consents",
        columns: "id, contact_id, purpose, granted_at, withdrawn_at, source",
        tag: 2,
        rows: consent_rows,
    },
    Table {
        name: "deals",
        columns: "id, contact_id, amount, stage, created_at, closed_at",
        tag: 3,
        rows: deal_rows,
    },
    Table {
        name: "interactions",
        columns: "id, contact_id, channel, notes, occurred_at",
        tag: 4,
        rows: interaction_rows,
    },
    Table {
        name: "tickets",
        columns: "id, contact_id, subject, body, status, created_at",
        tag: 5,
        rows: ticket_rows,
    },
    Table {
        name: "health_records",
        columns: "id, contact_id, condition, notes, recorded_at",
        tag: 6,
        rows: health_rows,
    },
    Table {
        name: "judicial_records",
        columns: "id, contact_id, offence, sentence_date",
        tag: 7,
        rows: judicial_rows,
    },
];

const DAY: u64 = 86_400;
const CRM_END: i64 = CRM_START + CRM_SPAN as i64;

/// A moment after `from`, at most `within` seconds later and never after the CRM's end.
fn after(rng: &mut Rng, from: i64, within: u64) -> i64 {
    let room = (CRM_END - from).max(1) as u64;
    from + rng.below(within.min(room)) as i64
}

fn tab(out: &mut String) {
    out.push('\t');
}

fn timestamp(out: &mut String, at: Option<i64>) {
    match at {
        Some(at) => write_timestamp(out, at),
        None => out.push_str("\\N"),
    }
}

/// Starts a row: `id \t contact_id` and advances the id counter.
fn begin_child(out: &mut String, next_id: &mut u64, contact: &Contact) {
    let _ = write!(out, "{next_id}\t{}", contact.id);
    *next_id += 1;
}

fn contact_row(_: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    let (p, id) = (c.person(), c.id);
    *next_id = id + 1;
    let _ = write!(
        out,
        "{id}\t{}\t{}\t{}\t{}\t",
        p.first_name, p.last_name, p.email, p.phone
    );
    write_date(out, p.birth_days);
    let _ = write!(
        out,
        "\t{}\t{}\t{}\t{}\t",
        p.tax_code, p.street_address, p.city, p.region
    );
    write_timestamp(out, p.created_at);
    tab(out);
    timestamp(out, p.last_activity_at);
    out.push('\n');
}

const CONSENT_SOURCES: &[&str] = &[
    "web_form",
    "call_center",
    "email",
    "paper_form",
    "mobile_app",
];

/// About two consents per contact: marketing 75% (a fifth of them withdrawn, so 60% active),
/// profiling 55%, newsletter 70%.
fn consent_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    for (purpose, given, withdrawn) in [
        ("marketing", 75, 20),
        ("profiling", 55, 15),
        ("newsletter", 70, 15),
    ] {
        if !rng.percent(given) {
            continue;
        }
        begin_child(out, next_id, c);
        let granted = after(rng, c.created_at(), 30 * DAY);
        let _ = write!(out, "\t{purpose}\t");
        write_timestamp(out, granted);
        tab(out);
        let withdrawn = rng
            .percent(withdrawn)
            .then(|| after(rng, granted + 1, 700 * DAY));
        timestamp(out, withdrawn);
        let _ = writeln!(out, "\t{}", rng.pick(CONSENT_SOURCES));
    }
}

const STAGES: &[&str] = &[
    "lead",
    "lead",
    "qualified",
    "proposal",
    "negotiation",
    "won",
    "won",
    "lost",
];

/// Zero to two deals per contact (one on average).
fn deal_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    for _ in 0..rng.below(3) {
        begin_child(out, next_id, c);
        let cents = rng.between(50_000, 5_000_000);
        let stage = rng.pick(STAGES);
        let created = after(rng, c.created_at(), 900 * DAY);
        let _ = write!(out, "\t{}.{:02}\t{stage}\t", cents / 100, cents % 100);
        write_timestamp(out, created);
        tab(out);
        let closed = matches!(stage, "won" | "lost").then(|| after(rng, created + 1, 120 * DAY));
        timestamp(out, closed);
        out.push('\n');
    }
}

const CHANNELS: &[&str] = &["call", "email", "meeting"];
const PLAIN_NOTES: &[&str] = &[
    "Called to discuss the renewal of the contract.",
    "Asked for a quote on the premium plan.",
    "Left a voicemail, will try again next week.",
    "Sent the brochure and the price list.",
    "Met at their office, interested in the annual plan.",
    "Complained about the last invoice; passed to billing.",
    "Prefers to be contacted in the afternoon.",
    "Satisfied with the service, may refer a colleague.",
    "Not interested for now, follow up in six months.",
    "Requested a demo for the whole team.",
    "Cliente interessato all'offerta, richiamare lunedì.",
    "Inviato preventivo aggiornato.",
];

/// A note as people write them: usually plain, sometimes with the customer's phone, e-mail, name or
/// new address in it (which is why notes are personal data).
fn note(rng: &mut Rng, p: &Person) -> Option<String> {
    Some(match rng.below(20) {
        0 => return None,
        1 | 2 => format!("Wants to be called back on {}.", p.phone),
        3 | 4 => format!("Prefers e-mail, write to {}.", p.email),
        5 => format!(
            "Moved to {}, {}; update the delivery address.",
            p.street_address, p.city
        ),
        6 => format!(
            "Spoke with {} {} about the offer.",
            p.first_name, p.last_name
        ),
        _ => rng.pick(PLAIN_NOTES).to_string(),
    })
}

/// Zero to six interactions per contact (three on average).
fn interaction_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    for _ in 0..rng.below(7) {
        begin_child(out, next_id, c);
        let _ = write!(out, "\t{}\t", rng.pick(CHANNELS));
        match note(rng, c.person()) {
            Some(text) => out.push_str(&text),
            None => out.push_str("\\N"),
        }
        tab(out);
        write_timestamp(out, after(rng, c.created_at(), 2000 * DAY));
        out.push('\n');
    }
}

const SUBJECTS: &[&str] = &[
    "Invoice not received",
    "Cannot log in",
    "Change of address",
    "Refund request",
    "Wrong amount charged",
    "Delivery delayed",
    "Cancel subscription",
    "Update contact details",
    "Product defect",
    "Password reset",
];
const STATUSES: &[&str] = &["open", "pending", "resolved", "closed", "closed"];

/// Half of the contacts have one ticket.
fn ticket_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    if !rng.percent(50) {
        return;
    }
    begin_child(out, next_id, c);
    let subject = rng.pick(SUBJECTS);
    let _ = write!(
        out,
        "\t{subject}\tHello, about \"{}\": ",
        subject.to_lowercase()
    );
    match note(rng, c.person()) {
        Some(text) => out.push_str(&text),
        None => out.push_str("please get back to me."),
    }
    let p = c.person();
    let _ = write!(
        out,
        " Regards, {} {}\t{}\t",
        p.first_name,
        p.last_name,
        rng.pick(STATUSES)
    );
    write_timestamp(out, after(rng, c.created_at(), 1500 * DAY));
    out.push('\n');
}

const CONDITIONS: &[&str] = &[
    "type 2 diabetes",
    "hypertension",
    "asthma",
    "coeliac disease",
    "pregnancy",
    "reduced mobility",
    "hearing impairment",
    "penicillin allergy",
    "depression",
    "multiple sclerosis",
];
const HEALTH_NOTES: &[&str] = &[
    "Needs step-free access at events.",
    "Dietary restrictions noted for the catering.",
    "Reported by the customer during a call.",
    "Certificate on file.",
];

/// 5% of contacts have one or two health records.
fn health_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    if !rng.percent(5) {
        return;
    }
    for _ in 0..rng.between(1, 2) {
        begin_child(out, next_id, c);
        let _ = write!(out, "\t{}\t", rng.pick(CONDITIONS));
        if rng.percent(80) {
            out.push_str(rng.pick(HEALTH_NOTES));
        } else {
            out.push_str("\\N");
        }
        tab(out);
        write_timestamp(out, after(rng, c.created_at(), 1500 * DAY));
        out.push('\n');
    }
}

const OFFENCES: &[&str] = &[
    "fraud",
    "theft",
    "tax evasion",
    "driving under the influence",
    "embezzlement",
    "assault",
    "forgery",
];

/// 1% of contacts have a judicial record.
fn judicial_rows(rng: &mut Rng, c: &Contact, next_id: &mut u64, out: &mut String) {
    if !rng.percent(1) {
        return;
    }
    begin_child(out, next_id, c);
    let _ = write!(out, "\t{}\t", rng.pick(OFFENCES));
    // Sentenced between the 18th birthday and the CRM's end.
    let adult = people::birth_days(c.seed, c.id) + 18 * 365;
    write_date(
        out,
        adult + rng.below((CRM_END / DAY as i64 - adult).max(1) as u64) as i64,
    );
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_every_column_and_no_stray_separators() {
        for table in TABLES {
            let mut out = String::new();
            let mut next_id = 1;
            for contact in 1..=500 {
                table.write_rows(3, contact, &mut next_id, &mut out);
            }
            let columns = table.columns.split(',').count();
            for line in out.lines() {
                assert_eq!(line.split('\t').count(), columns, "{}: {line}", table.name);
                assert!(
                    !line.contains('\\') || line.contains("\\N"),
                    "{}: {line}",
                    table.name
                );
            }
            assert_eq!(
                out.lines().count() as u64,
                next_id - 1,
                "{}: ids are dense",
                table.name
            );
        }
    }
}
