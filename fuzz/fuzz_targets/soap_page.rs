//! Drives the SOAP response page parser over arbitrary bytes with small limits.
//!
//! Besides "no panic, no hang, no unbounded memory", asserts its contract: records are
//! numbered on from the first index, offsets lie inside the input, and a page that parses
//! was read to its end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::soap::{SoapFormat, parse_page};

fuzz_target!(|data: &[u8]| {
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let format = SoapFormat {
        max_depth: 3 + usize::from(knob & 0x07),
        max_element_bytes: 32 << (knob >> 5),
        max_page_bytes: 64 << 10,
        ..SoapFormat::default()
    };
    if let Ok(page) = parse_page(input, "fuzz", &format, 5, 0) {
        assert!(page.bytes <= input.len() as u64);
        for (i, r) in page.records.iter().enumerate() {
            let pos = match r {
                Ok(rec) => rec.position,
                Err(e) => e.position,
            };
            assert_eq!(pos.index, 6 + i as u64);
            assert!(pos.byte_offset <= input.len() as u64);
        }
    }
});
