//! History tables that copy another table's rows, one row per change: SQLAlchemy-Continuum's
//! `<table>_version` (the table's columns plus `transaction_id`, `end_transaction_id` and
//! `operation_type`). A copy holds the same personal data as its table but none of its foreign keys,
//! so a reference to a person that the table's foreign key revealed (`bill.payer_id`) is not found in
//! the copy by itself; and the copy's key (the table's key plus `transaction_id`) makes
//! `transaction_id` look like the key of a table of people. This pass gives each copied column the
//! table's finding for it and takes back key findings of Continuum's own columns.
//! Not for: the findings themselves (`propose`), histories kept as JSON documents (`json`).

use super::names::Strength;
use super::propose::{Finding, Holds, TableProposal};

/// The columns Continuum adds to each copy.
const CONTINUUM_COLUMNS: &[&str] = &["transaction_id", "end_transaction_id", "operation_type"];

/// The table that `name` copies when it is a Continuum version table with `columns`.
fn copied_table<'a>(name: &'a str, columns: &[&str]) -> Option<&'a str> {
    let table = name.strip_suffix("_version")?;
    (!table.is_empty()
        && columns.contains(&"transaction_id")
        && columns.contains(&"operation_type"))
    .then_some(table)
}

/// Gives the columns of each version table the findings of the table it copies (a stronger finding
/// of its own is kept), and drops the key findings of Continuum's columns.
pub fn copy_findings(proposals: &mut [TableProposal]) {
    let copies: Vec<(usize, Vec<Finding>)> = proposals
        .iter()
        .enumerate()
        .filter_map(|(index, copy)| {
            let columns: Vec<&str> = copy
                .sample
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let name = copied_table(&copy.sample.name, &columns)?;
            let table = proposals
                .iter()
                .find(|t| t.sample.name == name && t.sample.schema == copy.sample.schema)?;
            let findings = table
                .findings
                .iter()
                .filter(|f| columns.contains(&f.column.as_str()))
                .cloned()
                .map(|mut finding| {
                    finding.evidence = vec![format!(
                        "copy of {name}.{} (SQLAlchemy-Continuum's history)",
                        finding.column
                    )];
                    finding
                })
                .collect();
            Some((index, findings))
        })
        .collect();
    for (index, findings) in copies {
        let copy = &mut proposals[index];
        copy.findings
            .retain(|f| !(CONTINUUM_COLUMNS.contains(&f.column.as_str()) && f.holds == Holds::Key));
        for finding in findings {
            match copy
                .findings
                .iter_mut()
                .find(|f| f.column == finding.column)
            {
                Some(own) if own.strength == Strength::Strong => {}
                Some(own) => *own = finding,
                None => {
                    copy.secrets.retain(|s| s.column != finding.column);
                    copy.findings.push(finding);
                }
            }
        }
        let order: Vec<String> = copy.sample.columns.iter().map(|c| c.name.clone()).collect();
        copy.findings
            .sort_by_key(|f| order.iter().position(|c| *c == f.column));
        copy.framework.get_or_insert("SQLAlchemy-Continuum");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::discover::propose::tests::column;
    use crate::ops::discover::propose::{ColumnSample, TableSample, propose};

    fn table(name: &str, key: &[&str], columns: Vec<ColumnSample>) -> TableSample {
        TableSample {
            schema: "public".into(),
            name: name.into(),
            rows_sampled: columns.first().map_or(0, |c| c.values.len()),
            columns,
            primary_key: key.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        }
    }

    fn found(proposals: &[TableProposal], table: &str) -> Vec<String> {
        let proposal = proposals.iter().find(|p| p.sample.name == table).unwrap();
        proposal
            .findings
            .iter()
            .filter(|f| f.strength == Strength::Strong)
            .map(|f| format!("{}:{}", f.column, f.category.as_str()))
            .collect()
    }

    #[test]
    fn a_version_table_gets_its_tables_findings_and_no_key_of_its_own() {
        let names = ["Marco Rossi", "Giulia Bianchi", "Anna Verdi"];
        let person = table(
            "person",
            &["id"],
            vec![
                column("id", "integer", &["1", "2", "3"]),
                column("name", "text", &names),
            ],
        );
        let mut bill = table(
            "bill",
            &["id"],
            vec![
                column("id", "integer", &["1"]),
                column("payer_id", "integer", &["1"]),
                column("amount", "double precision", &["60"]),
            ],
        );
        bill.foreign_keys = vec![("payer_id".into(), "person".into())];
        let bill_version = table(
            "bill_version",
            &["id", "transaction_id"],
            vec![
                column("id", "integer", &["1"]),
                column("payer_id", "integer", &["1"]),
                column("amount", "double precision", &["60"]),
                column("transaction_id", "bigint", &["7"]),
                column("end_transaction_id", "bigint", &[]),
                column("operation_type", "smallint", &["0"]),
            ],
        );
        let person_version = table(
            "person_version",
            &["id", "transaction_id"],
            vec![
                column("id", "integer", &["1", "2", "3"]),
                column("name", "text", &names),
                column("transaction_id", "bigint", &["1", "1", "2"]),
                column("operation_type", "smallint", &["0", "0", "0"]),
            ],
        );
        let mut proposals = propose(vec![person, bill, bill_version, person_version], 20_000);
        assert_eq!(found(&proposals, "bill"), ["payer_id:identifying"]);
        copy_findings(&mut proposals);
        assert_eq!(found(&proposals, "bill_version"), ["payer_id:identifying"]);
        assert_eq!(
            found(&proposals, "person_version"),
            ["id:identifying", "name:identifying"]
        );
        let copy = proposals
            .iter()
            .find(|p| p.sample.name == "bill_version")
            .unwrap();
        assert_eq!(copy.framework, Some("SQLAlchemy-Continuum"));
        assert_eq!(
            copy.findings[0].evidence,
            ["copy of bill.payer_id (SQLAlchemy-Continuum's history)"]
        );
        // A table merely named like a copy, without Continuum's columns, is left as it is.
        assert_eq!(copied_table("release_version", &["id", "notes"]), None);
    }
}
