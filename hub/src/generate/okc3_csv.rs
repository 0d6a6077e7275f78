//! The nightly CSV drop of source **okc-3** (`schemas/formats/csv-drop.md`): semicolon-
//! separated, Windows-1252 encoded, one file per night with the whole snapshot, written from
//! the shared population ([`super::feed`]) so okc-3 knows the same households as every other
//! source.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use encoding_rs::WINDOWS_1252;

use super::feed::{Feed, FeedRecord};

/// The header line of an okc-3 drop (the names the okc-3 mapping file uses).
pub const OKC3_HEADER: [&str; 16] = [
    "dossiernummer",
    "bsn",
    "geboortedatum",
    "organisatie",
    "team",
    "domein",
    "doel",
    "contactpersoon",
    "functie",
    "telefoon",
    "email",
    "startdatum",
    "einddatum",
    "status",
    "regisseur",
    "relaties",
];

/// The okc-3 feed of the population of `persons` with `seed`.
pub fn okc3_feed(persons: u64, seed: u64) -> Result<Feed, String> {
    Feed::build("okc-3", "OKC3-", persons, seed, 0.5)
}

/// The file name of generation `g`'s drop: `okc3-YYYYMMDD.csv` (name order is time order).
pub fn okc3_file_name(feed: &Feed, g: u32) -> String {
    format!("okc3-{}.csv", feed.day(g).format("%Y%m%d"))
}

/// What a written drop holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvDrop {
    /// The file.
    pub path: PathBuf,
    /// Records written (bad ones included).
    pub records: u64,
    /// Records written with one field too few on purpose (they go to quarantine).
    pub bad: u64,
}

fn dutch(d: chrono::NaiveDate) -> String {
    d.format("%d-%m-%Y").to_string()
}

fn row(r: &FeedRecord) -> Vec<String> {
    let (name, role, phone, email) = r.contact.clone().unwrap_or_default();
    let relations = r
        .relations
        .iter()
        .map(|(bsn, kind)| {
            let soort = match *kind {
                "parent" => "ouder",
                "child" => "kind",
                _ => "huisgenoot",
            };
            format!("{soort}:{bsn}")
        })
        .collect::<Vec<_>>()
        .join("|");
    vec![
        r.id.clone(),
        r.bsn.clone(),
        dutch(r.birth),
        r.org.clone(),
        r.team.clone(),
        r.domain.to_owned(),
        r.goal.clone(),
        name,
        role,
        phone,
        email,
        dutch(r.start),
        r.end.map(dutch).unwrap_or_default(),
        match r.status {
            "planned" => "aangemeld",
            "ended" => "afgesloten",
            _ => "actief",
        }
        .to_owned(),
        if r.coordinator { "ja" } else { "nee" }.to_owned(),
        relations,
    ]
}

/// Writes the whole snapshot of generation `g` into `dir` (as `okc3_file_name`), every
/// `bad_every`-th record (0: none) one field short. Written to a `.partial` file first and
/// renamed, so a reader never sees half a file.
pub fn write_okc3_csv(feed: &Feed, g: u32, dir: &Path, bad_every: u64) -> io::Result<CsvDrop> {
    let mut n = 0u64;
    write_okc3_csv_with(feed, g, dir, false, &mut |_| {
        n += 1;
        bad_every > 0 && n.is_multiple_of(bad_every)
    })
}

/// Like [`write_okc3_csv`], with the records written one field short picked by `short`
/// (called once per record, in order); `empty` writes a complete drop of the header only.
pub fn write_okc3_csv_with(
    feed: &Feed,
    g: u32,
    dir: &Path,
    empty: bool,
    short: &mut dyn FnMut(&FeedRecord) -> bool,
) -> io::Result<CsvDrop> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(okc3_file_name(feed, g));
    let partial = path.with_extension("csv.partial");
    let mut out = BufWriter::new(File::create(&partial)?);
    let builder = {
        let mut b = csv::WriterBuilder::new();
        b.delimiter(b';')
            .terminator(csv::Terminator::CRLF)
            .flexible(true);
        b
    };
    let mut records = 0u64;
    let mut bad = 0u64;
    let mut emit = |fields: &[String]| -> io::Result<()> {
        let mut line = builder.from_writer(Vec::with_capacity(512));
        line.write_record(fields)?;
        let utf8 = line.into_inner().map_err(|e| e.into_error())?;
        let text = String::from_utf8_lossy(&utf8);
        let (bytes, _, _) = WINDOWS_1252.encode(&text);
        out.write_all(&bytes)
    };
    let header: Vec<String> = OKC3_HEADER.iter().map(|h| (*h).to_owned()).collect();
    emit(&header)?;
    for r in feed.changed_since(g, None).take_while(|_| !empty) {
        records += 1;
        let mut fields = row(&r);
        if short(&r) {
            fields.pop();
            bad += 1;
        }
        emit(&fields)?;
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(CsvDrop { path, records, bad })
}
