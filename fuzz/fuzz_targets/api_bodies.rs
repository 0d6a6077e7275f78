//! Drives the lookup API's parsers of outside input over arbitrary bytes: the JSON body parser
//! (`api::body::parse`) for the lookup, audit-search, review and subject-access bodies, and
//! `looks_like_bsn` on any text.
//!
//! Besides "no panic", asserts: an error message never contains a 9-digit run from the input
//! (bodies may hold a BSN, and errors must not echo it), and a nine-digit run of the input
//! text is always recognised as BSN-like.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_hub::api::body::parse;
use matchpoint_hub::api::lookup::{LookupRequest, looks_like_bsn};
use matchpoint_hub::api::privacy::{ReviewRequest, SearchRequest, SubjectAccessRequest};

fn nine_digit_runs(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 9 {
                out.push(&text[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn no_echo<T: serde::de::DeserializeOwned>(data: &[u8], runs: &[&str]) {
    if let Err(e) = parse::<T>(data) {
        let msg = e.to_string();
        for r in runs {
            assert!(!msg.contains(&r[..9]), "an error echoed digits of the input");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let runs = nine_digit_runs(&text);
    no_echo::<LookupRequest>(data, &runs);
    no_echo::<SearchRequest>(data, &runs);
    no_echo::<ReviewRequest>(data, &runs);
    no_echo::<SubjectAccessRequest>(data, &runs);
    let flagged = looks_like_bsn(&text);
    if !runs.is_empty() {
        assert!(flagged, "nine digits in a row must be flagged");
    }
});
