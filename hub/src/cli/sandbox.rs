//! `matchpoint sandbox`: starts every simulated upstream on loopback and runs until Ctrl-C.
//!
//! With `--dir DIR` it also writes the file-based sources of the same population under
//! `DIR/data` (the okc-2 XML export, the okc-3 CSV drop, the iWmo messages of source `wmo`)
//! and the supplier database of the SQL sources (okc-4, RIS; `sqlite://DIR/supplier.db` by
//! default). `matchpoint demo` uses the same writing ([`write_sources`]) and starting logic,
//! so `matchpoint sandbox --dir DIR` with the demo's persons, seed, bad share and base port
//! serves exactly what the demo synced: a later `sync` finds nothing new.
//!
//! The file and SQL sources get control servers too (`POST /_sandbox/advance` writes their
//! next generation, `POST /_sandbox/faults` applies faults to them; see
//! `matchpoint_hub::sandbox::files`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use matchpoint_hub::generate::{GenerateOptions, generate};
use matchpoint_hub::sandbox::faults::FaultSpec;
use matchpoint_hub::sandbox::files::{FileOptions, IWMO_EVERY, iwmo_first_day, start_files};
use matchpoint_hub::sandbox::supplier_db::{SupplierDb, SupplierOptions};
use matchpoint_hub::sandbox::{SandboxOptions, start};
use matchpoint_hub::sources::sql_pull::redact;

/// Arguments of `matchpoint sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Persons in the synthetic population. The HTTP upstreams generate each page from the
    /// seed, so their memory does not grow with it (startup walks the population once).
    #[arg(long, default_value_t = 2000)]
    pub persons: u64,
    /// Seed of the population and of the fault draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to inject, e.g. `latency=50ms,status=503:0.1,429:0.05:retry-after=1,reset=0.02,truncate=0.01,malformed=0.01`.
    /// Items: latency, status, reset (HTTP sources only); truncate, garbage (HTTP bodies;
    /// the XML export, CSV drop and last iWmo message file of a generation); malformed
    /// (records of every kind; SQL: rows of the next advance); empty (HTTP and files: a
    /// complete delivery without records; iWmo and SQL: an advance writes nothing);
    /// missing-view (SQL: the view is dropped). Each source's control server takes a new
    /// spec at POST /_sandbox/faults.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Upstream N listens on this port + N (okc-1 on +1, okc-6 on +6); the control servers
    /// of the file and SQL sources on +2 (okc-2), +3 (okc-3), +4 (okc-4), +7 (ris) and +8
    /// (wmo); 0 picks free ports.
    #[arg(long, default_value_t = 18000)]
    pub listen_base: u16,
    /// Folder to write the file-based sources to (okc-2 XML export, okc-3 CSV drop, iWmo
    /// messages of `wmo`, under DIR/data).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Share of deliberately bad records in the okc-2 export and the iWmo messages (0 to 1;
    /// `matchpoint demo` uses 0.02).
    #[arg(long, default_value_t = 0.0)]
    pub bad_share: f64,
    /// Database for the SQL sources (okc-4, RIS): sqlite://PATH, postgres://… or mysql://…
    /// (default: sqlite://DIR/supplier.db with --dir). See `matchpoint supplier-db`.
    #[arg(long, env = "MATCHPOINT_SUPPLIER_DB_URL")]
    pub supplier_db: Option<String>,
    /// Prefix of the supplier database's tables and views (for tests sharing one server);
    /// with a prefix the tables are created at start and dropped at Ctrl-C.
    #[arg(long, default_value = "", hide = true)]
    pub supplier_prefix: String,
}

/// Writes every file-based source of the population under `dir/data` (okc-2 XML export,
/// okc-3 CSV drop, iWmo messages in `data/wmo/berichten`) and, given `supplier`, creates
/// the supplier database of okc-4 and RIS there. Deterministic in (`persons`, `seed`,
/// `bad_share`): writing again gives the same deliveries. Prints one line per source.
pub(super) async fn write_sources(
    dir: &Path,
    persons: u64,
    seed: u64,
    bad_share: f64,
    supplier: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        bad_share.is_finite() && (0.0..=1.0).contains(&bad_share),
        "--bad-share must be between 0.0 and 1.0, found {bad_share}"
    );
    let opts = GenerateOptions {
        persons,
        out: dir.join("data"),
        seed,
        bad_share,
    };
    let summary = generate(&opts, &mut |_| {})
        .with_context(|| format!("writing the file-based sources into {}", opts.out.display()))?;
    println!(
        "okc-2  xml_export  {}  records: {} ({} deliberately bad)",
        matchpoint_hub::generate::okc2_export_path(&opts.out).display(),
        summary.records,
        summary.bad_records
    );
    let folder = opts.out.join("wmo").join("berichten");
    let wmo = matchpoint_hub::generate::iwmo::write_for_population(
        &folder,
        &opts,
        IWMO_EVERY,
        iwmo_first_day(),
    )
    .with_context(|| format!("writing iWmo messages into {}", folder.display()))?;
    println!(
        "wmo    iwmo        {}  messages: {} for {} assignments",
        wmo.folder.display(),
        wmo.messages,
        wmo.assignments
    );
    if let Some(url) = supplier {
        super::supplier_db::create(url, persons, seed).await?;
    }
    super::supplier_db::write_okc3(dir, persons, seed, 0)?;
    Ok(())
}

/// Runs the sandbox until Ctrl-C.
pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let faults = FaultSpec::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let supplier = args.supplier_db.clone().or_else(|| {
        args.dir
            .as_ref()
            .map(|d| format!("sqlite://{}", d.join("supplier.db").display()))
    });
    let prefixed = !args.supplier_prefix.is_empty();
    if let Some(dir) = &args.dir {
        let plain = supplier.as_deref().filter(|_| !prefixed);
        write_sources(dir, args.persons, args.seed, args.bad_share, plain).await?;
    } else if let Some(url) = supplier.as_deref().filter(|_| !prefixed) {
        super::supplier_db::create(url, args.persons, args.seed).await?;
    }
    let supplier_opts = SupplierOptions {
        persons: args.persons,
        seed: args.seed,
        prefix: args.supplier_prefix.clone(),
        ..SupplierOptions::default()
    };
    let db = match &supplier {
        Some(url) if prefixed => Some(SupplierDb::create(url, &supplier_opts).await?.0),
        Some(url) => Some(
            SupplierDb::open(url, &supplier_opts)
                .await
                .with_context(|| format!("opening the supplier databases in {}", redact(url)))?,
        ),
        None => None,
    };
    let opts = SandboxOptions {
        persons: args.persons,
        seed: args.seed,
        faults: faults.clone(),
        listen_base: args.listen_base,
        dir: args.dir.clone(),
    };
    let running = start(&opts).await.map_err(anyhow::Error::msg)?;
    for r in &running {
        println!(
            "{}  {}  {}  records: {}  control: {}/_sandbox/  auth: {}",
            r.name,
            r.kind,
            r.url,
            r.upstream.feed.len(),
            r.root,
            r.auth_hint
        );
    }
    let files = start_files(
        &FileOptions {
            dir: args.dir.as_deref(),
            persons: args.persons,
            seed: args.seed,
            bad_share: args.bad_share,
            faults,
            listen_base: args.listen_base,
        },
        db,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    for f in &files {
        println!(
            "{}  {}  {}  generation: {}  control: {}/_sandbox/  auth: none",
            f.source.def.name,
            f.source.def.kind,
            f.source.location,
            f.source.generation().await,
            f.root,
        );
    }
    println!(
        "Sandbox ready (seed {}, {} persons); Ctrl-C stops it.",
        args.seed, args.persons
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    if prefixed && let Some(sql) = files.iter().find(|f| f.source.def.kind == "sql_pull") {
        sql.source
            .drop_supplier_objects()
            .await
            .map_err(anyhow::Error::msg)?;
    }
    println!("Sandbox stopped.");
    Ok(ExitCode::SUCCESS)
}
