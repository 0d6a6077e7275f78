//! Drives the REST/JSON page decoder (and with it the JSON flattening) over arbitrary bytes.
//!
//! Besides "no panic, no hang, no unbounded memory", asserts its contract: records are
//! numbered 1, 2, 3, … and a decoded page accounts for no more bytes than it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::json_flatten::FlattenLimits;
use matchpoint_connectors::rest_json::{RestJsonDecoder, RestJsonFormat};

fuzz_target!(|data: &[u8]| {
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let format = RestJsonFormat {
        flatten: FlattenLimits {
            max_depth: 1 + usize::from(knob & 0x0f),
            max_fields: 1 + usize::from(knob >> 4) * 16,
        },
        ..RestJsonFormat::default()
    };
    let mut decoder = RestJsonDecoder::new(format, "fuzz");
    if let Ok(page) = decoder.decode(input, None) {
        assert!(page.bytes <= input.len() as u64);
        for (i, r) in page.records.iter().enumerate() {
            let pos = match r {
                Ok(rec) => rec.position,
                Err(e) => e.position,
            };
            assert_eq!(pos.index, 1 + i as u64);
        }
    }
});
