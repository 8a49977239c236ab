//! The policy file parser and validator on any text: a policy or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(diagnostics) = policy::Policy::parse("policy.toml", text) {
            let _ = diagnostics.to_string();
        }
    }
});
