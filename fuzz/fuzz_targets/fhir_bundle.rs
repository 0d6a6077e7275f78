//! Drives the FHIR R4 searchset Bundle decoder over arbitrary bytes.
//!
//! Besides "no panic, no hang" (which libFuzzer checks), asserts the decoder's contract:
//! records are numbered on from the first index, every record stays at the page's offset,
//! a decoded page never holds more records than entries, and a page with more entries than
//! allowed is refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::fhir::bundle::{BundleError, DecodeOptions, decode_bundle};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the entry limit and whether an organisation system is wanted.
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let options = DecodeOptions {
        max_entries: usize::from(knob & 0x3f),
        organization_system: (knob & 0x40 != 0)
            .then(|| "https://matchpoint.example/fhir/NamingSystem/organisation".to_owned()),
    };
    let first = 1 + u64::from(knob >> 7) * 1000;
    match decode_bundle(input, first, 77, &options) {
        Ok(page) => {
            assert!(page.records.len() <= options.max_entries);
            for (i, r) in page.records.iter().enumerate() {
                let pos = match r {
                    Ok(rec) => {
                        assert!(rec.record_id.as_deref().is_some_and(|id| !id.is_empty()));
                        rec.position
                    }
                    Err(e) => e.position,
                };
                assert_eq!(pos.index, first + i as u64);
                assert_eq!(pos.byte_offset, 77);
            }
        }
        Err(BundleError::TooManyEntries(max)) => assert_eq!(max, options.max_entries),
        Err(_) => {}
    }
});
