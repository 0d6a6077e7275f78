//! Drives the key file parser (`MasterKey::from_key_file_text`: base key, index versions,
//! `active_index`) over arbitrary text. Besides "no panic", asserts that an error never
//! quotes a 64-hex-digit run of the input (a secret).

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_schemas::MasterKey;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = MasterKey::from_key_file_text(&text) {
        let msg = e.to_string();
        for w in text.split(|c: char| !c.is_ascii_hexdigit()) {
            if w.len() >= 64 {
                assert!(!msg.contains(w), "an error quoted a secret");
            }
        }
    }
});
