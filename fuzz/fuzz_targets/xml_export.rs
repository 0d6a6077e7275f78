//! Drives the OKC XML export reader over arbitrary bytes with small limits.
//!
//! Besides "no panic, no hang, no unbounded memory" (which libFuzzer checks), asserts the
//! reader's contract: it ends, a delivery error is the last item, records are numbered
//! 1, 2, 3, … with offsets inside the input, and a delivery that succeeds holds exactly the
//! announced number of records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::location::ReadLimits;
use matchpoint_connectors::xml_export::{XmlExportFormat, XmlExportReader};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits, so the limit edges get explored too.
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let format = XmlExportFormat {
        max_depth: 2 + usize::from(knob & 0x07),
        max_record_bytes: 256 << ((knob >> 3) & 0x03),
        limits: ReadLimits {
            max_bytes: 64 << 10,
            max_event_bytes: 32 << (knob >> 5),
        },
        ..XmlExportFormat::default()
    };
    let mut reader = XmlExportReader::new(input, "fuzz", format);
    // The smallest record, `<dossier/>`, takes 10 bytes.
    let max_items = input.len() / 8 + 2;
    let mut records = 0u64;
    let mut failed = false;
    for item in reader.by_ref() {
        assert!(!failed, "an item after a delivery error");
        let position = match item {
            Ok(Ok(record)) => record.position,
            Ok(Err(quarantined)) => quarantined.position,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        records += 1;
        assert!(records as usize <= max_items, "the reader does not end");
        assert_eq!(position.index, records);
        assert!(position.byte_offset < input.len() as u64);
    }
    assert!(reader.next().is_none());
    if !failed {
        assert_eq!(reader.announced_count(), Some(records));
    }
});
