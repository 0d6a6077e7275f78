//! Drives the iWmo 3.2 message reader over arbitrary bytes with small limits.
//!
//! Besides "no panic, no hang, no unbounded memory" (which libFuzzer checks), asserts the
//! reader's contract: reading only the header (or header and BSN) agrees with reading the whole
//! message, and a message that reads has at least one and at most `max_products` products.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::iwmo::{Body, MessageLimits, read_envelope, read_header, read_message};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits, so the limit edges get explored too.
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let limits = MessageLimits {
        max_bytes: 64 << 10,
        max_event_bytes: 32 << (knob >> 5),
        max_depth: 3 + usize::from(knob & 0x0f),
        max_products: 1 + usize::from((knob >> 4) & 0x03),
    };
    let whole = read_message(input, &limits);
    let header = read_header(input, &limits);
    let envelope = read_envelope(input, &limits);
    if let Ok(m) = &whole {
        assert_eq!(header.as_ref().ok(), Some(&m.header));
        let (h, bsn) = envelope.as_ref().expect("the envelope of a readable message reads");
        assert_eq!(h, &m.header);
        assert_eq!(bsn.as_deref(), Some(m.client.bsn.as_str()));
        let products = match &m.body {
            Body::Assignment(p) => p.len(),
            Body::Start(p) => p.len(),
            Body::Stop(p) => p.len(),
        };
        assert!(products >= 1 && products <= limits.max_products);
        assert_eq!(m.client.bsn.len(), 9);
    }
});
