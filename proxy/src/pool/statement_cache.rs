//! The statements prepared on one pooled upstream connection (kept with it in its pool), with
//! when each was last used, so that a connection holds at most `[pool]
//! prepared_statements_per_connection` of them: preparing one more first closes the one used
//! least recently (see `prepared`, which sends the Close).
//! Not for: what a client's statement is called on the server, or the messages (see `prepared`).

use bytes::Bytes;
use std::collections::HashMap;

/// The statements prepared on one connection, by server-side name.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Server-side name → the use count at its last use.
    used: HashMap<Bytes, u64>,
    /// Uses so far (a clock).
    uses: u64,
}

impl ServerStatements {
    pub fn contains(&self, name: &Bytes) -> bool {
        self.used.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// The clock: statements used from now on have a later last use than every earlier one.
    pub fn now(&self) -> u64 {
        self.uses
    }

    /// The statement, held, is used now.
    pub fn touch(&mut self, name: &Bytes) {
        if let Some(at) = self.used.get_mut(name) {
            *at = self.uses;
            self.uses += 1;
        }
    }

    /// The statement is prepared now (and so used).
    pub fn insert(&mut self, name: Bytes) {
        self.used.insert(name, self.uses);
        self.uses += 1;
    }

    /// The statement is still prepared after all (a Close PostgreSQL skipped): first to go next.
    pub fn restore(&mut self, name: Bytes) {
        self.used.entry(name).or_insert(0);
    }

    pub fn remove(&mut self, name: &Bytes) {
        self.used.remove(name);
    }

    /// Takes out the statement used least recently, if one was last used before `before` (those
    /// used since may still be needed by messages on their way).
    pub fn evict(&mut self, before: u64) -> Option<Bytes> {
        let victim = self
            .used
            .iter()
            .filter(|(_, at)| **at < before)
            .min_by_key(|(_, at)| **at)
            .map(|(name, _)| name.clone())?;
        self.used.remove(&victim);
        Some(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_used_least_recently_goes_first_and_recent_ones_stay() {
        let mut server = ServerStatements::default();
        for name in ["a", "b", "c"] {
            server.insert(Bytes::from_static(name.as_bytes()));
        }
        server.touch(&Bytes::from_static(b"a"));
        let quiet = server.now();
        server.touch(&Bytes::from_static(b"b"));
        assert_eq!(server.evict(quiet), Some(Bytes::from_static(b"c")));
        assert_eq!(server.evict(quiet), Some(Bytes::from_static(b"a")));
        // `b` was used after the quiet point: it stays.
        assert_eq!(server.evict(quiet), None);
        assert_eq!(server.len(), 1);
        server.restore(Bytes::from_static(b"a"));
        assert_eq!(server.evict(server.now()), Some(Bytes::from_static(b"a")));
    }
}
