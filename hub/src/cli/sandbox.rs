//! `matchpoint sandbox`: starts every simulated upstream on loopback and runs until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use matchpoint_hub::generate::{GenerateOptions, generate};
use matchpoint_hub::sandbox::faults::FaultSpec;
use matchpoint_hub::sandbox::{SandboxOptions, start};

/// Arguments of `matchpoint sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Persons in the synthetic population.
    #[arg(long, default_value_t = 2000)]
    pub persons: u64,
    /// Seed of the population and of the fault draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to inject, e.g. `latency=50ms,status=503:0.1,429:0.05:retry-after=1,reset=0.02,truncate=0.01,malformed=0.01`.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Upstream N listens on this port + N (okc-1 on +1, okc-6 on +6); 0 picks free ports.
    #[arg(long, default_value_t = 18000)]
    pub listen_base: u16,
    /// Folder to write the file-based sources to (the okc-2 XML export).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Database for the SQL sources (okc-4, RIS): sqlite://PATH, postgres://… or mysql://…
    /// (default: sqlite://DIR/supplier.db with --dir). See `matchpoint supplier-db`.
    #[arg(long, env = "MATCHPOINT_SUPPLIER_DB_URL")]
    pub supplier_db: Option<String>,
}

/// Runs the sandbox until Ctrl-C.
pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let faults = FaultSpec::parse(&args.faults).map_err(anyhow::Error::msg)?;
    if let Some(dir) = &args.dir {
        let opts = GenerateOptions {
            persons: args.persons,
            out: dir.join("data"),
            seed: args.seed,
            bad_share: 0.0,
        };
        generate(&opts, &mut |_| {}).context("writing the file-based sources")?;
        println!(
            "okc-2  xml_export  {}",
            matchpoint_hub::generate::okc2_export_path(&opts.out).display()
        );
        // The WMO module's iWmo messages: one in five adults of the same population.
        let first_day = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default();
        let folder = opts.out.join("wmo").join("berichten");
        let wmo =
            matchpoint_hub::generate::iwmo::write_for_population(&folder, &opts, 5, first_day)
                .context("writing the iWmo messages")?;
        println!(
            "wmo  iwmo  {}  messages: {}  assignments: {}",
            folder.display(),
            wmo.messages,
            wmo.assignments
        );
    }
    let supplier = args.supplier_db.clone().or_else(|| {
        args.dir
            .as_ref()
            .map(|d| format!("sqlite://{}", d.join("supplier.db").display()))
    });
    if let Some(url) = &supplier {
        super::supplier_db::create(url, args.persons, args.seed).await?;
    }
    if let Some(dir) = &args.dir {
        super::supplier_db::write_okc3(dir, args.persons, args.seed, 0)?;
    }
    let opts = SandboxOptions {
        persons: args.persons,
        seed: args.seed,
        faults,
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
    println!(
        "Sandbox ready (seed {}, {} persons); Ctrl-C stops it.",
        args.seed, args.persons
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("Sandbox stopped.");
    Ok(ExitCode::SUCCESS)
}
