//! Storage limitation (GDPR Art. 5.1.e): the retention rule a table declares — which timestamp column
//! dates a row, how long the row is kept, and what happens when the period has passed (the row is
//! deleted, or named columns are replaced by their masks). Pure parsing and validation; not for running
//! it (see `maschera retention run`).

use crate::access::Action;
use crate::action::{check_fits, parse_action};
use crate::file::RetentionFile;
use crate::model::{DeclaredColumn, Span};
pub use crate::model::{Period, PeriodUnit, Retention, RetentionAction};
use std::collections::BTreeMap;

/// A problem in a retention rule: where, what, and a hint.
pub(crate) struct RetentionError {
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

fn error(span: Span, message: impl Into<String>, help: Option<&str>) -> RetentionError {
    RetentionError {
        span,
        message: message.into(),
        help: help.map(str::to_string),
    }
}

/// Validates a table's `retention` section against the table's declared columns.
pub(crate) fn parse_retention(
    file: &RetentionFile,
    columns: &BTreeMap<String, DeclaredColumn>,
) -> Result<Retention, Vec<RetentionError>> {
    let mut errors = Vec::new();
    let period = Period::parse(file.period.get_ref())
        .map_err(|m| {
            errors.push(error(
                file.period.span(),
                m,
                Some("write a count and a unit: days, weeks, months or years, e.g. `5 years`"),
            ))
        })
        .ok();
    let masks = parse_masks(&file.masks, columns, &mut errors);
    let action = match file.action.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("delete") if masks.is_empty() => Some(RetentionAction::Delete),
        None | Some("delete") => {
            errors.push(error(
                file.column.span(),
                "a retention rule that deletes rows takes no `masks`",
                Some("write `action = \"mask\"` to keep the rows with masked columns"),
            ));
            None
        }
        Some("mask") if masks.is_empty() => {
            errors.push(error(
                file.column.span(),
                "`action = \"mask\"` needs `masks = { column = \"<action>\" }`",
                None,
            ));
            None
        }
        Some("mask") => Some(RetentionAction::Mask(masks)),
        Some(other) => {
            let span = file.action.as_ref().map(|a| a.span()).unwrap_or(0..0);
            errors.push(error(
                span,
                format!("unknown retention action `{other}`"),
                Some("valid actions: delete, mask"),
            ));
            None
        }
    };
    match (period, action) {
        (Some(period), Some(action)) if errors.is_empty() => Ok(Retention {
            column: file.column.get_ref().clone(),
            period,
            action,
        }),
        _ => Err(errors),
    }
}

/// Parses `column = "<action>"` masks that replace stored values once (so only idempotent actions).
pub(crate) fn parse_masks(
    masks: &BTreeMap<crate::file::Key, serde_spanned::Spanned<String>>,
    columns: &BTreeMap<String, DeclaredColumn>,
    errors: &mut Vec<RetentionError>,
) -> BTreeMap<String, Action> {
    let mut parsed = BTreeMap::new();
    for (column, text) in masks {
        match parse_action(text.get_ref()) {
            Ok(action) => {
                let declared = columns
                    .get(column.get_ref())
                    .and_then(|c| c.data_type.as_deref())
                    .unwrap_or(crate::action::UNKNOWN_TYPE);
                if let Err(m) = check_fits(&action, declared) {
                    errors.push(error(text.span(), m, None));
                }
                if matches!(
                    action,
                    Action::Drop | Action::Hash | Action::Pseudonym | Action::TablePseudonym
                ) {
                    errors.push(error(
                        text.span(),
                        "retention masks replace the stored value once: `drop`, `hash` and `pseudonym` cannot",
                        Some("use `null`, `constant(...)`, a `mask.*`, `partial`, `year`, `month` or `bucket`"),
                    ));
                }
                parsed.insert(column.get_ref().clone(), action);
            }
            Err(e) => errors.push(error(text.span(), e.message, Some(&e.help))),
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_print_as_intervals() {
        assert_eq!(Period::parse("5 years").unwrap().interval(), "5 years");
        assert_eq!(Period::parse("1 Month").unwrap().interval(), "1 month");
        assert_eq!(Period::parse("30 days").unwrap().interval(), "30 days");
        assert!(Period::parse("five years").is_err());
        assert!(Period::parse("0 days").is_err());
        assert!(Period::parse("3 fortnights").is_err());
        assert!(Period::parse("3").is_err());
    }
}
