//! The named prepared statements one client session holds, bounded (`[limits]
//! max_prepared_statements`): each one costs the proxy memory (its rewrite, its access-log record,
//! about 1.5 KB) and the backend a plan, and one session could otherwise prepare without end and
//! use up the memory of the one proxy process every user shares (attack round 5). A Parse of a new
//! name beyond the bound is refused with 54000; Close, SQL `DEALLOCATE` and `DISCARD ALL` give names
//! back. A name counts from its Parse, even if PostgreSQL then refuses that Parse (the client closes
//! it or reuses the name, as drivers do).
//! Not for: SQL-level `PREPARE` (its statements are counted by PostgreSQL alone), the statement rate
//! (`admission`), or what a statement may do (`enforce`).

use crate::session::Decision;
use crate::wire::client_error::ClientError;
use crate::wire::frontend::{Frontend, Target};
use std::collections::HashSet;

/// The SQLSTATE of the refusal (program_limit_exceeded).
const LIMIT_EXCEEDED: &str = "54000";

/// The names one session holds and its bound.
pub struct PreparedCap {
    max: usize,
    names: HashSet<Vec<u8>>,
}

impl PreparedCap {
    /// A bound of `max` names; `None` for 0 (no bound).
    pub fn new(max: usize) -> Option<PreparedCap> {
        (max > 0).then(|| PreparedCap {
            max,
            names: HashSet::new(),
        })
    }

    /// Follows `frame` (a client message); the refusal of a Parse of one name too many.
    pub fn check(&mut self, frame: &[u8]) -> Option<Decision> {
        // Only Parse, Close and Query name statements: the other messages (Bind, Execute, CopyData
        // ...) are not decoded here, on every message's path.
        if !matches!(frame.first(), Some(b'P' | b'C' | b'Q')) {
            return None;
        }
        match Frontend::decode(frame).ok()? {
            Frontend::Parse { name, .. } if !name.is_empty() && !self.names.contains(name) => {
                if self.names.len() >= self.max {
                    let message = format!(
                        "too many prepared statements in this session (limit {}, [limits] \
                         max_prepared_statements): close some (Close, DEALLOCATE) before preparing more",
                        self.max
                    );
                    return Some(ClientError::new(LIMIT_EXCEEDED, message).into());
                }
                self.names.insert(name.to_vec());
            }
            Frontend::Close {
                target: Target::Statement,
                name,
            } => {
                self.names.remove(name);
            }
            Frontend::Query { sql } => self.follow_sql(sql),
            _ => {}
        }
        None
    }

    /// `DEALLOCATE [PREPARE] name|ALL` and `DISCARD ALL` as the first statement of a query.
    fn follow_sql(&mut self, sql: &[u8]) {
        let text = String::from_utf8_lossy(sql);
        let mut words = text
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty());
        let first = words.next().unwrap_or_default();
        let mut next = words.next().unwrap_or_default();
        if first.eq_ignore_ascii_case("discard") && next.eq_ignore_ascii_case("all") {
            self.names.clear();
        } else if first.eq_ignore_ascii_case("deallocate") {
            if next.eq_ignore_ascii_case("prepare") {
                next = words.next().unwrap_or_default();
            }
            if next.eq_ignore_ascii_case("all") {
                self.names.clear();
            } else {
                // An unquoted name is folded to lower case, as PostgreSQL does.
                let name = match next.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                    Some(quoted) => quoted.to_string(),
                    None => next.to_ascii_lowercase(),
                };
                self.names.remove(name.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frontend::Frontend;

    fn frame(message: Frontend<'_>) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        message.encode(&mut out);
        out.to_vec()
    }

    fn parse(name: &str) -> Vec<u8> {
        frame(Frontend::Parse {
            name: name.as_bytes(),
            sql: b"SELECT 1",
            param_types: &[0, 0],
        })
    }

    fn query(sql: &str) -> Vec<u8> {
        frame(Frontend::Query {
            sql: sql.as_bytes(),
        })
    }

    #[test]
    fn a_name_beyond_the_bound_is_refused_and_closing_one_makes_room() {
        let mut cap = PreparedCap::new(2).expect("a bound");
        assert!(cap.check(&parse("a")).is_none());
        assert!(cap.check(&parse("b")).is_none());
        // The unnamed statement and a name already held cost nothing.
        assert!(cap.check(&parse("")).is_none());
        assert!(cap.check(&parse("a")).is_none());
        assert!(cap.check(&parse("c")).is_some());
        let close = frame(Frontend::Close {
            target: Target::Statement,
            name: b"a",
        });
        assert!(cap.check(&close).is_none());
        assert!(cap.check(&parse("c")).is_none());
        assert!(cap.check(&parse("d")).is_some());
        assert!(cap.check(&query("DEALLOCATE \"c\"")).is_none());
        assert!(cap.check(&parse("d")).is_none());
        assert!(cap.check(&query("discard all")).is_none());
        assert!(cap.check(&parse("e")).is_none());
        assert!(cap.check(&parse("f")).is_none());
        assert!(cap.check(&query("DEALLOCATE PREPARE ALL;")).is_none());
        assert!(cap.check(&parse("g")).is_none());
        assert!(PreparedCap::new(0).is_none());
    }
}
