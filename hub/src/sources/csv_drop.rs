//! Kind `csv_drop`: semicolon-separated Windows-1252 CSV files (`schemas/formats/csv-drop.md`)
//! from a file, a folder (full: the newest `.csv`; incremental: every newer one) or a URL.
//!
//! Columns are read by header name: every path the mapping file names must be a header (so
//! renaming a header in the mapping file alone changes what is read). The record id column is
//! `[source.csv] id_column`; when the mapping has `[relations]`, its `group` is the relations
//! column (`soort:BSN|soort:BSN`), with `kind` and `bsn` as the names of the parts.
//! A file whose last record does not end with a line break was cut off in transport and fails
//! the run, unless `[source.csv] final_line_break = "optional"`.

use std::io::BufRead;

use matchpoint_connectors::RecordStream;
use matchpoint_connectors::csv_drop::{CsvDropReader, CsvFormat, RelationColumn};
use matchpoint_mapping::MappingSpec;

use super::files::{FileDeliveries, deliveries};
use super::{OpenContext, Opened};
use crate::config::{FinalLineBreak, SourceConfig};

/// Opens the run's CSV file(s).
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let files = deliveries(cx.source, "csv", cx.cursor, cx.full)?;
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(Opened {
        stream: Box::new(FileDeliveries::new(cx.source, files, decode)),
    }))
}

/// The CSV layout of a source: its `[source.csv]` table and the columns its mapping names.
pub fn format_for(source: &SourceConfig) -> CsvFormat {
    let settings = source.csv.clone().unwrap_or_default();
    let spec = source.mapping_spec.as_ref();
    let relations = spec
        .and_then(|s| s.relations.as_ref())
        .map(|r| RelationColumn {
            column: r.group.clone(),
            kind_field: r.kind.clone(),
            bsn_field: r.bsn.clone(),
        });
    CsvFormat {
        delimiter: u8::try_from(settings.delimiter).unwrap_or(b';'),
        id_column: settings.id_column,
        relations,
        required_columns: spec.map(mapped_columns).unwrap_or_default(),
        max_record_bytes: source.limits.max_record_bytes,
        max_bytes: source.limits.max_bytes,
        require_final_line_break: settings.final_line_break == FinalLineBreak::Required,
    }
}

/// Every column a mapping reads (the relations group is the relations column, handled apart).
pub fn mapped_columns(spec: &MappingSpec) -> Vec<String> {
    let f = &spec.fields;
    let mut cols = vec![
        f.bsn.clone(),
        f.life_domain.clone(),
        f.contact_name.clone(),
        f.start_date.clone(),
    ];
    for p in [
        &f.birth_date,
        &f.organisation,
        &f.team,
        &f.goal,
        &f.contact_role,
        &f.contact_phone,
        &f.contact_email,
        &f.end_date,
        &f.status,
        &f.coordinator,
    ]
    .into_iter()
    .flatten()
    {
        cols.push(p.clone());
    }
    cols
}

fn decode(source: &SourceConfig, input: Box<dyn BufRead>, location: &str) -> Box<dyn RecordStream> {
    Box::new(CsvDropReader::new(input, location, format_for(source)))
}

#[cfg(test)]
mod tests;
