//! `matchpoint demo` and `matchpoint generate`: the first-time experience on SQLite.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use matchpoint_hub::generate::{self, GenerateOptions};
use matchpoint_schemas::MasterKey;

use super::Env;
use super::sync_cmd;

#[path = "demo_serve.rs"]
mod demo_serve;

const EXAMPLE_CONFIG: &str = include_str!("../../../deploy/matchpoint.example.toml");
/// The line of the example config after which come the sources `matchpoint sandbox` serves.
const SANDBOX_SOURCES_MARKER: &str = "# ==== Sources served by `matchpoint sandbox`";
const OKC2_MAPPING: &str = include_str!("../../../deploy/mappings/okc-2.toml");
const WMO_MAPPING: &str = include_str!("../../../deploy/mappings/wmo.toml");

/// Writes synthetic data with a progress line.
pub fn generate_cmd(
    persons: u64,
    out: &Path,
    seed: u64,
    bad_share: f64,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&bad_share),
        "--bad-share must be between 0.0 and 1.0, found {bad_share}"
    );
    let terminal = std::io::stderr().is_terminal();
    let mut next_report = 100_000u64;
    let summary = generate::generate(
        &GenerateOptions {
            persons,
            out: out.to_path_buf(),
            seed,
            bad_share,
        },
        &mut |written| {
            if written >= next_report {
                if terminal {
                    eprint!("\r{written} records written");
                } else {
                    eprintln!("{written} records written");
                }
                next_report = written + 100_000;
            }
        },
    )
    .with_context(|| format!("generating synthetic data into {}", out.display()))?;
    if terminal && next_report > 100_000 {
        eprintln!();
    }
    println!(
        "Generated {} persons in {} households: {} records ({} deliberately bad, listed in {}).",
        summary.persons,
        summary.households,
        summary.records,
        summary.bad_records,
        out.join(generate::MANIFEST_FILE).display()
    );
    for f in &summary.files {
        println!("  {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn write_if_missing(path: &Path, text: &str) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Key, data, config, sync, summary — everything under `dir`; then (unless `listen` is
/// `None`) the lookup API with demo users and ready-to-paste requests.
pub async fn demo(
    dir: &Path,
    persons: u64,
    seed: u64,
    listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("Matchpoint demo in {}", dir.display());

    let key = dir.join("matchpoint.key");
    if key.exists() {
        println!("  key:           {} (kept)", key.display());
    } else {
        MasterKey::generate_file(&key, "demo-k1")?;
        println!("  key:           {} (new, mode 0600)", key.display());
    }
    let data = dir.join("data");
    println!("  synthetic data for {persons} persons (seed {seed}):");
    generate_cmd(persons, &data, seed, 0.02)?;
    // The WMO module's iWmo messages (source `wmo`).
    let first_day = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default();
    // One in five adults of the same population, so WMO clients are known to OKC too.
    let wmo = generate::iwmo::write_for_population(
        &data.join("wmo/berichten"),
        &GenerateOptions {
            persons,
            out: data.clone(),
            seed,
            bad_share: 0.02,
        },
        5,
        first_day,
    )
    .with_context(|| format!("writing iWmo messages into {}", data.join("wmo").display()))?;
    println!(
        "  {} iWmo messages for {} WMO assignments in {}",
        wmo.messages,
        wmo.assignments,
        wmo.folder.display()
    );

    // Sources served by `matchpoint sandbox` need it running; the demo config stops before them.
    let file_sources = EXAMPLE_CONFIG
        .split(SANDBOX_SOURCES_MARKER)
        .next()
        .unwrap_or(EXAMPLE_CONFIG);
    let wrote_cfg = write_if_missing(&dir.join("matchpoint.toml"), file_sources)?;
    write_if_missing(
        &dir.join("organisations.toml"),
        generate::ORGANISATIONS_TOML,
    )?;
    write_if_missing(&dir.join("mappings/okc-2.toml"), OKC2_MAPPING)?;
    write_if_missing(&dir.join("mappings/wmo.toml"), WMO_MAPPING)?;
    let cfg_path = dir.join("matchpoint.toml");
    println!(
        "  config:        {} ({})",
        cfg_path.display(),
        if wrote_cfg { "new" } else { "kept" }
    );
    println!("  index:         {}", dir.join("matchpoint.db").display());
    println!();

    let env = Env::load(&cfg_path).await?;
    let code = sync_cmd::sync(&env, &[], false, false).await?;
    let shown = cfg_path.display();
    // The binary as the user can type it (e.g. ./target/release/matchpoint after `cargo run`).
    let me = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let cwd = std::env::current_dir().ok()?;
            exe.strip_prefix(&cwd)
                .ok()
                .map(|rel| format!("./{}", rel.display()))
        })
        .unwrap_or_else(|| "matchpoint".to_owned());
    println!();
    println!("Next:");
    println!("  {me} stats --config {shown}");
    println!("  {me} runs --config {shown}");
    println!("  {me} quarantine --config {shown}");
    println!("  {me} sync --config {shown}     # a second sync changes nothing");
    match listen {
        Some(listen) if code == ExitCode::SUCCESS => {
            demo_serve::serve(&env.config, &listen, &me).await?;
        }
        Some(_) => println!("\nThe sync did not succeed, so the API is not started."),
        None => println!("  {me} serve --config {shown}    # the lookup API"),
    }
    Ok(code)
}
