//! Later nights of the okc-2 XML export, for `matchpoint sandbox`: the export of generation
//! `g` written from the okc-2 [`Feed`] (the whole population, `share` 1), in the same format
//! as [`super::generate`] writes the first night.
//!
//! [`super::generate`] writes every record of the population in the first export, the feed's
//! held-back records included; so in later exports a record the feed holds back until a
//! later generation keeps the state the first export gave it, and every generation adds the
//! feed's *newcomers* instead: new records (ids after the population's) for persons the
//! export knows, born in that generation. With `bad_share` 0 the record ids of the feed and
//! of [`super::generate`] agree, so a full sync of a later export sees only what changed.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;

use super::feed::{Feed, FeedRecord};
use super::xml::{FOOTER, escape_into};

/// The okc-2 feed of the population of `persons` with `seed` (every household).
pub fn okc2_feed(persons: u64, seed: u64) -> Result<Feed, String> {
    Feed::build("okc-2", "OKC2-", persons, seed, 1.0)
}

/// One in this many records of the population gets a newcomer record (a second involvement
/// of the same person), each born in a generation from 1 to [`NEWCOMER_GENERATIONS`].
const NEWCOMER_EVERY: usize = 15;

/// Generations over which newcomers are spread.
const NEWCOMER_GENERATIONS: u32 = 10;

/// Record `index` of the okc-2 export at generation `g` (`g` ≥ 1), given its first state and
/// its state at `g`: the feed's state once born, the first export's state before.
fn at(first: FeedRecord, now: Option<FeedRecord>, g: u32) -> Option<FeedRecord> {
    if first.born > g { Some(first) } else { now }
}

/// The newcomer of record `index` (first state `first`) at generation `g`, if it has one
/// born by then: a new record id after the population's, the same person and organisation,
/// started the day its generation began.
fn newcomer(feed: &Feed, index: usize, first: &FeedRecord, g: u32) -> Option<FeedRecord> {
    if index % NEWCOMER_EVERY != NEWCOMER_EVERY - 1 {
        return None;
    }
    let born = 1 + (index / NEWCOMER_EVERY) as u32 % NEWCOMER_GENERATIONS;
    if born > g {
        return None;
    }
    let mut r = first.clone();
    let number = feed.len() + 1 + index / NEWCOMER_EVERY;
    r.id = format!("OKC2-{number:08}");
    r.goal = format!("{} (nieuw traject)", r.goal);
    r.start = feed.day(born);
    r.end = None;
    r.status = "active";
    r.born = born;
    r.touched = born;
    Some(r)
}

/// The records of the okc-2 export of generation `g` (≥ 1), in id order: two walks of the
/// feed (the population's records, then the newcomers).
pub fn okc2_records(feed: &Feed, g: u32) -> impl Iterator<Item = FeedRecord> + '_ {
    let base = feed
        .states(g)
        .filter_map(move |(_, first, now)| at(first, now, g));
    let new = feed
        .states(g)
        .filter_map(move |(i, first, _)| newcomer(feed, i, &first, g));
    base.chain(new)
}

/// Records of the okc-2 export of generation `g` that are new or changed since generation
/// `g - 1` (0 for generation 0).
pub fn okc2_changed(feed: &Feed, g: u32) -> u64 {
    if g == 0 {
        return 0;
    }
    feed.states(g)
        .map(|(i, first, now)| {
            let changed = first.born < g && now.is_some_and(|r| r.touched == g);
            let new = newcomer(feed, i, &first, g).is_some_and(|r| r.born == g);
            u64::from(changed) + u64::from(new)
        })
        .sum()
}

fn element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// Appends one `<dossier>`; a `malformed` record gets a start date in the wrong format (it
/// goes to quarantine).
fn dossier(out: &mut String, r: &FeedRecord, malformed: bool) {
    out.push_str("  <dossier id=\"");
    escape_into(out, &r.id);
    out.push_str("\">\n    <client>\n");
    element(out, "      ", "bsn", &r.bsn);
    element(out, "      ", "naam", &r.name);
    element(
        out,
        "      ",
        "geboortedatum",
        &r.birth.format("%Y-%m-%d").to_string(),
    );
    out.push_str("    </client>\n    <organisatie code=\"");
    escape_into(out, &r.org);
    out.push_str("\"/>\n");
    element(out, "    ", "team", &r.team);
    element(out, "    ", "domein", r.domain);
    element(out, "    ", "doel", &r.goal);
    out.push_str("    <contactpersoon>\n");
    if let Some((name, role, phone, email)) = &r.contact {
        element(out, "      ", "naam", name);
        element(out, "      ", "functie", role);
        element(out, "      ", "telefoon", phone);
        element(out, "      ", "email", email);
    }
    out.push_str("    </contactpersoon>\n");
    let begin = if malformed {
        r.start.format("%d-%m-%Y")
    } else {
        r.start.format("%Y-%m-%d")
    };
    let _ = write!(out, "    <periode begin=\"{begin}\"");
    if let Some(end) = r.end {
        let _ = write!(out, " eind=\"{}\"", end.format("%Y-%m-%d"));
    }
    out.push_str("/>\n");
    let status = match r.status {
        "planned" => "aangemeld",
        "ended" => "afgesloten",
        _ => "actief",
    };
    element(out, "    ", "status", status);
    element(
        out,
        "    ",
        "regisseur",
        if r.coordinator { "ja" } else { "nee" },
    );
    if !r.relations.is_empty() {
        out.push_str("    <relaties>\n");
        for (bsn, kind) in &r.relations {
            let soort = match *kind {
                "parent" => "ouder",
                "child" => "kind",
                _ => "huisgenoot",
            };
            let _ = writeln!(out, "      <relatie soort=\"{soort}\" bsn=\"{bsn}\"/>");
        }
        out.push_str("    </relaties>\n");
    }
    out.push_str("  </dossier>\n");
}

/// Writes the okc-2 export of generation `g` (≥ 1) to `path` (via a `.partial` file renamed
/// into place), the records `malformed` picks with a bad date; `empty` writes a complete
/// export with no records. Returns the records written.
pub fn write_okc2_generation(
    feed: &Feed,
    g: u32,
    path: &Path,
    empty: bool,
    malformed: &dyn Fn(&FeedRecord) -> bool,
) -> io::Result<u64> {
    let count = if empty {
        0
    } else {
        okc2_records(feed, g).count() as u64
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    let partial = path.with_file_name(name);
    let mut out = BufWriter::new(File::create(&partial)?);
    let created = feed.timestamp(g);
    out.write_all(super::xml::header(&created, count).as_bytes())?;
    let mut buf = String::with_capacity(64 * 1024);
    if !empty {
        for r in okc2_records(feed, g) {
            dossier(&mut buf, &r, malformed(&r));
            if buf.len() >= 60 * 1024 {
                out.write_all(buf.as_bytes())?;
                buf.clear();
            }
        }
    }
    buf.push_str(FOOTER);
    out.write_all(buf.as_bytes())?;
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(count)
}
