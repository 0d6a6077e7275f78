//! Kind `xml_export`: the OKC nightly XML export (`schemas/formats/okc-xml-export.xsd`).

use std::io::BufRead;

use matchpoint_connectors::RecordStream;
use matchpoint_connectors::location::ReadLimits;
use matchpoint_connectors::xml_export::{XmlExportFormat, XmlExportReader};

use super::files::{FileDeliveries, deliveries};
use super::{OpenContext, Opened};
use crate::config::SourceConfig;

/// Opens the run's export file(s).
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let files = deliveries(cx.source, "xml", cx.cursor, cx.full)?;
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(Opened {
        stream: Box::new(FileDeliveries::new(cx.source, files, decode)),
    }))
}

fn decode(source: &SourceConfig, input: Box<dyn BufRead>, location: &str) -> Box<dyn RecordStream> {
    let format = XmlExportFormat {
        max_depth: source.limits.max_depth,
        max_record_bytes: source.limits.max_record_bytes,
        limits: ReadLimits {
            max_bytes: source.limits.max_bytes,
            max_event_bytes: source.limits.max_element_bytes,
        },
        ..XmlExportFormat::default()
    };
    Box::new(XmlExportReader::new(input, location, format))
}
