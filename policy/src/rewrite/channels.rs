//! LISTEN, UNLISTEN, NOTIFY and `pg_notify` for a restricted role: only on the channels the policy
//! gives the role (`[roles.<role>] channels = [...]`, none by default). PostgreSQL has no privilege
//! on channels: any login may listen to any channel and read what any other session notifies (an
//! unrestricted session's payload may hold personal data), and may send on any channel another
//! application listens to. So this is a protection of the proxy alone. `UNLISTEN *` stays allowed
//! (it only stops the session's own listening).
//!
//! Not for: delivering notifications (PostgreSQL does, through the relay) or the policy file's
//! syntax (see `model.rs`, which uses [`channel_name_problem`]).

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Value,
};

use super::refusal::Refusal;
use super::scope::{fold, fold_name};
use crate::access::RoleAccess;

/// PostgreSQL's longest identifier (NAMEDATALEN - 1); a longer channel name is truncated by
/// PostgreSQL and would name another channel than the policy says.
const MAX_CHANNEL: usize = 63;

/// Why `name` cannot be a channel of the policy, if it cannot.
pub fn channel_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a channel name must not be empty")
    } else if name.len() > MAX_CHANNEL {
        Some("a channel name has at most 63 bytes (PostgreSQL truncates longer names)")
    } else if name.contains('\0') {
        Some("a channel name must not hold a NUL character")
    } else if name == "*" {
        Some("`*` is not a channel (UNLISTEN * is always allowed)")
    } else {
        None
    }
}

/// The refusal for a channel the role may not use.
fn refused(role: &RoleAccess, verb: &str, channel: &str) -> Refusal {
    Refusal::denied(format!(
        "permission denied for channel {channel:?}: role {} may not {verb} it (the policy's `channels` for the role do not list it)",
        role.role
    ))
}

/// Checks LISTEN, UNLISTEN and NOTIFY on `channel` (as written; PostgreSQL folds an unquoted name).
pub(crate) fn check_statement(
    role: &RoleAccess,
    verb: &str,
    channel: &Ident,
) -> Result<(), Refusal> {
    if verb == "unlisten" && channel.quote_style.is_none() && channel.value == "*" {
        return Ok(());
    }
    let name = fold(channel);
    if role.channels.contains(&name) {
        Ok(())
    } else {
        Err(refused(role, verb, &name))
    }
}

/// For a call of `pg_notify`: `Some` with the decision (the channel must be a string literal naming
/// a channel of the role); `None` for any other function.
pub(crate) fn check_pg_notify(
    role: &RoleAccess,
    function: &Function,
) -> Option<Result<(), Refusal>> {
    let parts = fold_name(&function.name).ok()?;
    let is_pg_notify = match parts.as_slice() {
        [name] => name == "pg_notify",
        [schema, name] => schema == "pg_catalog" && name == "pg_notify",
        _ => false,
    };
    if !is_pg_notify {
        return None;
    }
    let channel = match &function.args {
        FunctionArguments::List(list) => match list.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
                Value::SingleQuotedString(name) => Some(name.as_str()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    Some(match channel {
        Some(name) if role.channels.contains(name) => Ok(()),
        Some(name) => Err(refused(role, "notify", name)),
        None => Err(Refusal::denied(format!(
            "permission denied for function pg_notify: role {} may notify only on channels the policy lists, named by a string literal",
            role.role
        ))),
    })
}
