//! The `time` of records: now, in RFC 3339 (UTC, nanoseconds without trailing zeros), as the `time`
//! crate writes it, with the date and time of day formatted once per second.
//! Not for: reading times (see `search`) or durations.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Formats the current time; keeps the last second's `YYYY-MM-DDTHH:MM:SS`.
#[derive(Debug, Default)]
pub struct Clock {
    /// The second `text` starts with (seconds since the epoch), `None` before the first call.
    second: Option<u64>,
    /// The last time formatted; its first `prefix` bytes are the second.
    text: String,
    prefix: usize,
}

impl Clock {
    /// Now, e.g. `2026-11-22T15:01:02.123456789Z`.
    pub fn now(&mut self) -> &str {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.at(since.as_secs(), since.subsec_nanos())
    }

    /// The time `seconds` and `nanos` after the epoch.
    fn at(&mut self, seconds: u64, nanos: u32) -> &str {
        if self.second != Some(seconds) {
            self.text = whole_second(seconds);
            self.prefix = self.text.len();
            self.second = Some(seconds);
        }
        self.text.truncate(self.prefix);
        if nanos != 0 {
            // Nine digits, trailing zeros left out.
            let mut shown = nanos;
            let mut width = 9;
            while shown.is_multiple_of(10) {
                shown /= 10;
                width -= 1;
            }
            let _ = write!(self.text, ".{shown:0width$}");
        }
        self.text.push('Z');
        &self.text
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch (what the `time` crate writes before the
/// fraction and the `Z`).
fn whole_second(seconds: u64) -> String {
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    text.trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(seconds: u64, nanos: u32) -> String {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(seconds) * 1_000_000_000 + i128::from(nanos),
        )
        .expect("in range");
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("formatted")
    }

    #[test]
    fn times_read_as_the_time_crate_writes_them() {
        let mut clock = Clock::default();
        let nanos = [
            0,
            1,
            10,
            100,
            120_000_000,
            500_000_000,
            123_456_789,
            999_999_999,
            100_000_000,
            7_000,
            10_000_000,
        ];
        for seconds in [0, 1, 59, 1_795_000_000, 1_795_000_001, 4_102_444_799] {
            for &n in &nanos {
                assert_eq!(clock.at(seconds, n), reference(seconds, n), "{seconds} {n}");
            }
        }
        let now = clock.now().to_owned();
        assert!(now.ends_with('Z') && now.len() >= 20, "{now}");
        time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
            .expect("parses as RFC 3339");
    }
}
