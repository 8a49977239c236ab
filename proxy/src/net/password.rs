//! Password strength rules for the proxy's users: at least 12 characters and a zxcvbn score of 3 or
//! more. Not for: storing or hashing passwords (see `scram`). Refusals say why (too short, or zxcvbn's
//! warning and suggestions) and never repeat the password.

use thiserror::Error;

/// Fewest characters (Unicode scalar values) a password may have.
pub const MIN_LENGTH: usize = 12;
/// Most characters accepted; beyond this the strength estimate gets slow and nothing is gained.
pub const MAX_LENGTH: usize = 1024;
/// Lowest zxcvbn score accepted (0 to 4; 3 is "safely unguessable: moderate protection from offline
/// slow-hash scenario").
pub const MIN_SCORE: u8 = 3;

/// Why a password is refused; the text is for the person who chose it and holds no part of it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("weak password: {0}")]
pub struct WeakPassword(pub String);

/// Checks a new password. `context` holds words the password must not lean on (the user name, the role):
/// zxcvbn counts them as easy to guess.
pub fn check_strength(password: &str, context: &[&str]) -> Result<(), WeakPassword> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(WeakPassword(format!(
            "too short: it has {length} characters, at least {MIN_LENGTH} are needed"
        )));
    }
    if length > MAX_LENGTH {
        return Err(WeakPassword(format!(
            "too long: at most {MAX_LENGTH} characters are accepted"
        )));
    }
    let estimate = zxcvbn::zxcvbn(password, context);
    let score = u8::from(estimate.score());
    if score >= MIN_SCORE {
        return Ok(());
    }
    let mut reason =
        format!("too easy to guess (strength {score} of 4, at least {MIN_SCORE} is needed)");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!(": {warning}"));
        }
        for suggestion in feedback.suggestions() {
            reason.push_str(&format!(" {suggestion}"));
        }
    }
    Err(WeakPassword(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_passphrases_pass() {
        assert_eq!(
            check_strength("violet-harbour-quietly-37-lantern", &[]),
            Ok(())
        );
        assert_eq!(check_strength("Tz9#qLm2!vRw8@Kp", &["sam"]), Ok(()));
    }

    #[test]
    fn short_passwords_are_refused_with_the_reason() {
        let err = check_strength("Xq7#pL2!", &[]).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        assert!(err.contains("12"), "{err}");
        assert!(
            !err.contains("Xq7#pL2!"),
            "the password is never echoed: {err}"
        );
    }

    #[test]
    fn long_but_guessable_passwords_are_refused_with_zxcvbn_feedback() {
        for weak in [
            "password1234",
            "aaaaaaaaaaaaaaaa",
            "qwertyuiopasdf",
            "samsamsamsam2024",
        ] {
            let err = check_strength(weak, &["sam"]).unwrap_err().to_string();
            assert!(err.contains("too easy to guess"), "{weak}: {err}");
            assert!(!err.contains(weak), "the password is never echoed: {err}");
        }
        let err = check_strength("password1234", &[]).unwrap_err().to_string();
        assert!(
            err.len()
                > "weak password: too easy to guess (strength 0 of 4, at least 3 is needed)".len(),
            "{err}"
        );
    }

    #[test]
    fn absurdly_long_passwords_are_refused() {
        let err = check_strength(&"x".repeat(MAX_LENGTH + 1), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("too long"), "{err}");
    }
}
