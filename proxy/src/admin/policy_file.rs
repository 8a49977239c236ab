//! Reading a policy file for a command: parse it, print its diagnostics on standard error. Shared by
//! `policy check/apply/explain/register`, `dump`, `forget`, `subject export` and `retention run`.
//! Not for: the policy's meaning (the policy crate) or the proxy's reload of it (see `policy_state`).

use anyhow::{Context, Result};
use policy::Policy;
use std::path::Path;

/// Reads and parses a policy file; `None` after printing its errors.
pub fn load_policy(path: &Path) -> Result<Option<Policy>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy file {}", path.display()))?;
    match Policy::parse(&path.display().to_string(), &text) {
        Ok(policy) => Ok(Some(policy)),
        Err(diagnostics) => {
            report(&diagnostics.0);
            Ok(None)
        }
    }
}

/// Prints diagnostics to stderr; returns whether any is an error.
pub fn report(diagnostics: &[policy::Diagnostic]) -> bool {
    for d in diagnostics {
        eprintln!("{d}");
    }
    diagnostics.iter().any(|d| d.is_error())
}
