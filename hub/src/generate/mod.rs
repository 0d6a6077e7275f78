//! Synthetic but realistic source data: a seeded population of Amsterdam households and the
//! nightly XML export of source `okc-2` with their involvements, a share of them bad on
//! purpose and listed in a manifest.
//!
//! - `names`: word lists (client and professional names, areas).
//! - `catalogue`: life domains, goals, kinds of organisations, staff.
//! - `bsn`: unique valid BSNs from a keyed permutation (no set of used numbers).
//! - `population`: households, persons, involvements and defects, one household at a time.
//! - `xml`: the export and manifest writers.
//! - [`iwmo`]: iWmo 3.2 messages (WMO301/305/307) for the WMO module source.
//! - [`okc2_feed`]: later nights of the okc-2 export (`matchpoint sandbox`).
//!
//! Output for a given seed and options is byte-identical. The population is generated twice:
//! a first pass only counts the records (the export announces their number up front), the
//! second writes them; neither keeps more than one household in memory.

mod bsn;
mod catalogue;
pub mod feed;
pub mod fhir;
pub mod iwmo;
mod names;
pub mod okc2_feed;
pub mod okc3_csv;
mod population;
mod xml;

#[cfg(test)]
mod leak_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use catalogue::{Catalogue, SOURCE};
use population::{Population, PopulationError};

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of persons in the population.
    pub persons: u64,
    /// Output directory; created when missing.
    pub out: PathBuf,
    /// Seed: the same seed and options give byte-identical files.
    pub seed: u64,
    /// Share of records written with one defect (0 to 1, e.g. 0.02).
    pub bad_share: f64,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSummary {
    pub persons: u64,
    pub households: u64,
    /// Records (`dossier` elements) in the export, bad ones included.
    pub records: u64,
    /// Records written bad on purpose; each is listed in the manifest.
    pub bad_records: u64,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Why generating failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The bad share is not a number from 0 to 1.
    #[error("invalid bad share {0}: use a number from 0 to 1 (e.g. 0.02 for 2% bad records)")]
    BadShare(f64),
    /// More persons than the generator supports.
    #[error(
        "cannot generate {requested} persons: at most {max} are supported; generate fewer persons"
    )]
    TooManyPersons { requested: u64, max: u64 },
    /// More records than 8-digit record ids allow.
    #[error(
        "{records} records do not fit in 8-digit record ids (at most 99999999); \
         generate fewer persons or use a lower bad share"
    )]
    TooManyRecords { records: u64 },
    /// The built-in organisation registry cannot be used.
    #[error(
        "the built-in organisation registry deploy/organisations.toml cannot be used to \
         generate data: {0}; fix the file and rebuild"
    )]
    Registry(String),
    /// All BSNs are used.
    #[error("ran out of unused BSNs after {persons} persons; generate fewer persons")]
    BsnSpaceExhausted { persons: u64 },
    /// A directory cannot be created.
    #[error(
        "cannot create directory {}: {source}; check that the path is writable",
        .path.display()
    )]
    CreateDir { path: PathBuf, source: io::Error },
    /// A file cannot be written.
    #[error(
        "cannot write {}: {source}; check free disk space and permissions, then generate again",
        .path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    /// A finished file cannot be moved into place.
    #[error(
        "cannot rename {} to {}: {source}; check permissions on the output directory",
        .from.display(),
        .to.display()
    )]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// The writing pass disagrees with the counting pass (a bug).
    #[error(
        "internal error: counted {counted} records but wrote {written}; \
         the export is left unfinished; please report this with the seed"
    )]
    Inconsistent { counted: u64, written: u64 },
}

/// Name of the manifest of bad records inside the output directory.
pub const MANIFEST_FILE: &str = "manifest.jsonl";

/// The shared organisation registry (`deploy/organisations.toml`).
pub const ORGANISATIONS_TOML: &str = include_str!("../../../deploy/organisations.toml");

/// Name of the read-me inside the output directory.
const README_FILE: &str = "README.txt";

/// Most persons the generator accepts (BSN space and 8-digit record ids).
const MAX_PERSONS: u64 = 25_000_000;

/// Largest record number that fits `OKC2-` + 8 digits.
const MAX_RECORDS: u64 = 99_999_999;

/// Report progress every this many records.
const PROGRESS_EVERY: u64 = 10_000;

/// Flush the record buffer to the file when it grows beyond this.
const FLUSH_AT: usize = 64 * 1024;

/// Salt separating the staff roster's random stream from the population's.
const STAFF_SALT: u64 = 0x5354_4146_465F_5253; // "STAFF_RS"

/// Surnames used for clients (disjoint from professionals' surnames), for leak scans in tests.
pub fn client_surnames() -> &'static [&'static str] {
    names::CLIENT_SURNAMES
}

/// Path of the XML export for source okc-2 inside `out`.
pub fn okc2_export_path(out: &Path) -> PathBuf {
    out.join(SOURCE).join("export.xml")
}

/// The export's date, derived from the seed: a day in November 2026.
fn export_date(seed: u64) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default();
    base.checked_add_days(Days::new(seed % 28)).unwrap_or(base)
}

/// Generates the population and writes `out/okc-2/export.xml`, `out/manifest.jsonl` and
/// `out/README.txt`. `progress` is called with the number of records written so far.
pub fn generate(
    opts: &GenerateOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary, GenerateError> {
    if !opts.bad_share.is_finite() || !(0.0..=1.0).contains(&opts.bad_share) {
        return Err(GenerateError::BadShare(opts.bad_share));
    }
    if opts.persons > MAX_PERSONS {
        return Err(GenerateError::TooManyPersons {
            requested: opts.persons,
            max: MAX_PERSONS,
        });
    }
    let catalogue = Catalogue::build(
        ORGANISATIONS_TOML,
        &mut ChaCha8Rng::seed_from_u64(opts.seed ^ STAFF_SALT),
    )
    .map_err(GenerateError::Registry)?;
    let today = export_date(opts.seed);
    let created = format!("{}T02:00:00Z", today.format("%Y-%m-%d"));
    let population = || Population::new(opts.seed, opts.persons, opts.bad_share, today, &catalogue);
    let exhausted = |_: PopulationError| GenerateError::BsnSpaceExhausted {
        persons: opts.persons,
    };

    // Pass 1: count.
    let mut households = 0u64;
    let mut records = 0u64;
    let mut bad_records = 0u64;
    let mut pass = population();
    while let Some(h) = pass.next_household().map_err(exhausted)? {
        households += 1;
        records += h.records.len() as u64;
        bad_records += h.records.iter().filter(|r| r.defect.is_some()).count() as u64;
        if records > MAX_RECORDS {
            return Err(GenerateError::TooManyRecords { records });
        }
    }

    // Pass 2: write.
    let source_dir = opts.out.join(SOURCE);
    fs::create_dir_all(&source_dir).map_err(|source| GenerateError::CreateDir {
        path: source_dir.clone(),
        source,
    })?;
    let export_path = okc2_export_path(&opts.out);
    let manifest_path = opts.out.join(MANIFEST_FILE);
    let export_tmp = partial(&export_path);
    let manifest_tmp = partial(&manifest_path);
    let mut export = create(&export_tmp)?;
    let mut manifest = create(&manifest_tmp)?;
    let export_err = |source| GenerateError::Write {
        path: export_tmp.clone(),
        source,
    };
    let manifest_err = |source| GenerateError::Write {
        path: manifest_tmp.clone(),
        source,
    };

    export
        .write_all(xml::header(&created, records).as_bytes())
        .map_err(export_err)?;
    let mut buf = String::with_capacity(FLUSH_AT + 4096);
    let mut written = 0u64;
    let mut pass = population();
    while let Some(h) = pass.next_household().map_err(exhausted)? {
        for r in &h.records {
            xml::write_record(&mut buf, &catalogue, &h, r);
            if let Some(defect) = r.defect {
                serde_json::to_writer(&mut manifest, &xml::ManifestEntry::for_record(r, defect))
                    .map_err(io::Error::from)
                    .map_err(manifest_err)?;
                manifest.write_all(b"\n").map_err(manifest_err)?;
            }
            written += 1;
            if written.is_multiple_of(PROGRESS_EVERY) {
                progress(written);
            }
        }
        if buf.len() >= FLUSH_AT {
            export.write_all(buf.as_bytes()).map_err(export_err)?;
            buf.clear();
        }
    }
    if written != records {
        return Err(GenerateError::Inconsistent {
            counted: records,
            written,
        });
    }
    buf.push_str(xml::FOOTER);
    export.write_all(buf.as_bytes()).map_err(export_err)?;
    finish(export).map_err(export_err)?;
    finish(manifest).map_err(manifest_err)?;
    rename(&export_tmp, &export_path)?;
    rename(&manifest_tmp, &manifest_path)?;
    progress(written);

    let readme_path = opts.out.join(README_FILE);
    let summary_text = readme(opts, households, records, bad_records);
    fs::write(&readme_path, summary_text).map_err(|source| GenerateError::Write {
        path: readme_path.clone(),
        source,
    })?;

    Ok(GenerateSummary {
        persons: opts.persons,
        households,
        records,
        bad_records,
        files: vec![export_path, manifest_path, readme_path],
    })
}

/// The name a file has while it is being written: `export.xml` → `export.xml.partial`.
fn partial(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn create(path: &Path) -> Result<BufWriter<File>, GenerateError> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(256 * 1024, f))
        .map_err(|source| GenerateError::Write {
            path: path.to_owned(),
            source,
        })
}

fn finish(w: BufWriter<File>) -> io::Result<()> {
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

fn rename(from: &Path, to: &Path) -> Result<(), GenerateError> {
    fs::rename(from, to).map_err(|source| GenerateError::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

fn readme(opts: &GenerateOptions, households: u64, records: u64, bad: u64) -> String {
    let export = format!("{SOURCE}/export.xml");
    let pad = " ".repeat(20);
    format!(
        "SYNTHETIC DATA - NOT REAL PERSONS\n\
         =================================\n\
         \n\
         Everything in this directory was made up by `matchpoint generate` (seed {seed},\n\
         {persons} persons, bad share {share}). The BSNs pass the elfproef but were drawn at\n\
         random; names, organisations, professionals, phone numbers and e-mail addresses are\n\
         fictitious. Any resemblance to real persons is coincidental.\n\
         \n\
         What is where\n\
         -------------\n\
         {export:<20}the nightly XML export of source {SOURCE} (format\n\
         {pad}urn:matchpoint:okc-xml-export:1): {records} dossier records of\n\
         {pad}{persons} persons in {households} households.\n\
         {MANIFEST_FILE:<20}the {bad} records written bad on purpose, one JSON object per\n\
         {pad}line: source, source_record_id, reason (invalid_bsn, missing_field,\n\
         {pad}unknown_code, bad_date, duplicate_record) and field. A\n\
         {pad}duplicate_record is the second record with an id; the first is good.\n\
         {README_FILE:<20}this file.\n\
         \n\
         Organisation codes in the export are okc-2's own codes; deploy/organisations.toml maps\n\
         them to registry codes. The same seed and options always give the same files.\n",
        seed = opts.seed,
        persons = opts.persons,
        share = opts.bad_share,
    )
}
