//! Drives the CSV drop reader over arbitrary bytes with small limits.
//!
//! Besides "no panic, no hang, no unbounded memory" (which libFuzzer checks), asserts the
//! reader's contract: it ends, a delivery error is the last item, records are numbered
//! 1, 2, 3, …, and a finished stream stays finished.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matchpoint_connectors::RecordStream;
use matchpoint_connectors::csv_drop::{CsvDropReader, CsvFormat, RelationColumn};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits and options, so their edges get explored too.
    let (knob, input) = match data.split_first() {
        Some((knob, rest)) => (*knob, rest),
        None => (0, data),
    };
    let format = CsvFormat {
        delimiter: if knob & 1 == 0 { b';' } else { b',' },
        id_column: "id".into(),
        relations: (knob & 2 != 0).then(|| RelationColumn {
            column: "relaties".into(),
            kind_field: "soort".into(),
            bsn_field: "bsn".into(),
        }),
        required_columns: Vec::new(),
        max_record_bytes: 16 << ((knob >> 2) & 0x07),
        max_bytes: 64 << 10,
        require_final_line_break: knob & 0x20 == 0,
    };
    let mut reader = CsvDropReader::new(Box::new(std::io::Cursor::new(input.to_vec())), "fuzz", format);
    // Every record after the header takes at least one line-break byte.
    let max_items = input.len() + 2;
    let mut records = 0u64;
    loop {
        match reader.next_record() {
            Ok(Some(item)) => {
                records += 1;
                assert!(records as usize <= max_items, "the reader does not end");
                let position = match item {
                    Ok(record) => record.position,
                    Err(quarantined) => quarantined.position,
                };
                assert_eq!(position.index, records);
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert!(matches!(reader.next_record(), Ok(None)), "a finished stream stays finished");
});
