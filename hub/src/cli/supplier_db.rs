//! `matchpoint supplier-db`: creates the simulated supplier databases of the SQL sources
//! (okc-4, RIS) and moves them on by one night; `matchpoint sandbox --supplier-db URL` uses
//! the same setup. Also writes the okc-3 CSV drop of the same night when given a folder.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use matchpoint_hub::generate::okc3_csv::{okc3_feed, write_okc3_csv};
use matchpoint_hub::sandbox::supplier_db::{
    DEFAULT_BATCH_ROWS, Generation, Progress, Report, SupplierDb, SupplierOptions,
};
use matchpoint_hub::sources::sql_pull::redact;

/// Arguments of `matchpoint supplier-db`.
#[derive(Debug, clap::Args)]
pub struct SupplierDbArgs {
    /// Database URL: sqlite://PATH, postgres://USER@HOST/DB or mysql://USER@HOST/DB
    /// (MariaDB too). Prefer MATCHPOINT_SUPPLIER_DB_URL for URLs with a password.
    #[arg(
        long,
        env = "MATCHPOINT_SUPPLIER_DB_URL",
        default_value = "sqlite://supplier.db"
    )]
    pub url: String,
    /// Persons in the synthetic population (the same as the sandbox's).
    #[arg(long, default_value_t = 2000)]
    pub persons: u64,
    /// Seed of the population (the same as the sandbox's).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the next night instead of creating the tables: new, changed, ended and
    /// deleted rows with a later updated-at.
    #[arg(long)]
    pub advance: bool,
    /// Also write the okc-3 CSV drop of that night to DIR/data/okc-3.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rows per multi-row INSERT. The rows are generated while they are written, so memory
    /// depends on this, not on --persons.
    #[arg(
        long,
        default_value_t = DEFAULT_BATCH_ROWS as u64,
        value_parser = clap::value_parser!(u64).range(1..=100_000)
    )]
    pub batch_rows: u64,
}

/// Creates (or advances) the supplier databases and prints what is where.
pub async fn supplier_db(args: SupplierDbArgs) -> anyhow::Result<ExitCode> {
    let batch = usize::try_from(args.batch_rows).unwrap_or(DEFAULT_BATCH_ROWS);
    let generation = if args.advance {
        advance_in(&args.url, args.persons, args.seed, batch).await?
    } else {
        create_in(&args.url, args.persons, args.seed, batch).await?
    };
    if let Some(dir) = &args.dir {
        write_okc3(dir, args.persons, args.seed, generation.number)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn options(persons: u64, seed: u64, batch_rows: usize) -> SupplierOptions {
    SupplierOptions {
        persons,
        seed,
        batch_rows,
        ..SupplierOptions::default()
    }
}

/// Rows between two progress lines when stderr is not a terminal.
const LINE_EVERY: u64 = 100_000;

/// Progress on stderr: one line rewritten in place on a terminal, otherwise a line every
/// 100k rows of a source and at its end.
fn progress() -> Report {
    let terminal = std::io::stderr().is_terminal();
    let mut source = String::new();
    let mut next_line = LINE_EVERY;
    Box::new(move |p: Progress<'_>| {
        if p.source != source {
            source = p.source.to_owned();
            next_line = LINE_EVERY;
        }
        let of = p.total.map(|t| format!(" of {t}")).unwrap_or_default();
        let last = p.done;
        if terminal {
            eprint!("\r{:<6} {}{of} rows written", p.source, p.rows);
            if last {
                eprintln!();
            }
        } else if p.rows >= next_line || last {
            eprintln!("{:<6} {}{of} rows written", p.source, p.rows);
            next_line = p.rows - p.rows % LINE_EVERY + LINE_EVERY;
        }
    })
}

fn print(url: &str, db: &SupplierDb, g: &Generation) {
    println!(
        "okc-4  sql_pull  view {}  in {}  night {}: {} new, {} revised, {} ended, {} deleted",
        db.okc4_view(),
        redact(url),
        g.number,
        g.okc4.new,
        g.okc4.revised,
        g.okc4.ended,
        g.okc4.deleted
    );
    println!(
        "ris    sql_pull  view {}  in {}  night {}: {} new, {} revised, {} ended",
        db.ris_view(),
        redact(url),
        g.number,
        g.ris.new,
        g.ris.revised,
        g.ris.ended
    );
}

/// Creates and fills the okc-4 and RIS tables and views (night 0).
pub async fn create(url: &str, persons: u64, seed: u64) -> anyhow::Result<Generation> {
    create_in(url, persons, seed, DEFAULT_BATCH_ROWS).await
}

/// [`create`] with `batch` rows per INSERT.
async fn create_in(url: &str, persons: u64, seed: u64, batch: usize) -> anyhow::Result<Generation> {
    let (db, g) =
        SupplierDb::create_reporting(url, &options(persons, seed, batch), Some(progress()))
            .await
            .with_context(|| format!("creating the supplier databases in {}", redact(url)))?;
    print(url, &db, &g);
    println!(
        "       (for the example config: export MATCHPOINT_SUPPLIER_DB_URL='{}')",
        redact(url)
    );
    db.close().await?;
    Ok(g)
}

/// Writes the next night into an existing supplier database, with `batch` rows per INSERT.
async fn advance_in(
    url: &str,
    persons: u64,
    seed: u64,
    batch: usize,
) -> anyhow::Result<Generation> {
    let mut db = SupplierDb::open(url, &options(persons, seed, batch))
        .await
        .with_context(|| {
            format!(
                "opening the supplier databases in {} (create them first with \
                 `matchpoint supplier-db --url …`)",
                redact(url)
            )
        })?;
    db.set_report(Some(progress()));
    let g = db.advance().await?;
    print(url, &db, &g);
    db.close().await?;
    Ok(g)
}

/// Writes the okc-3 CSV drop of night `g` to `dir/data/okc-3`.
pub fn write_okc3(dir: &Path, persons: u64, seed: u64, g: u32) -> anyhow::Result<()> {
    let feed = okc3_feed(persons, seed).map_err(anyhow::Error::msg)?;
    let folder = dir.join("data").join("okc-3");
    let drop = write_okc3_csv(&feed, g, &folder, 0)
        .with_context(|| format!("writing the okc-3 CSV drop to {}", folder.display()))?;
    println!(
        "okc-3  csv_drop  {}  records: {}",
        drop.path.display(),
        drop.records
    );
    Ok(())
}
