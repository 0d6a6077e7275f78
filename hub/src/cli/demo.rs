//! `matchpoint demo` and `matchpoint generate`: the first-time experience on SQLite.
//!
//! `matchpoint demo --dir DIR` writes under DIR: a key, every file-based source of one
//! synthetic population (okc-2 XML, okc-3 CSV, iWmo messages of `wmo`), the supplier
//! database of okc-4 and RIS (`DIR/supplier.db`), the secrets of the HTTP and SQL sources
//! (`DIR/secrets/*`, mode 0600, referenced by `token_file`/`password_file`/`url_file`), the
//! mappings and a config with all eight sources (`DIR/matchpoint.toml`). It starts the
//! simulated HTTP upstreams (okc-1 REST, okc-5 FHIR, okc-6 SOAP) in-process on loopback at
//! the first free base port from 18000 (bases 100 apart), syncs all eight sources once, and
//! then serves the lookup API (the sandbox keeps running) until Ctrl-C; `--no-serve` stops
//! after the sync. Later syncs of the HTTP sources need `matchpoint sandbox --dir DIR` with
//! the printed arguments running.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use matchpoint_hub::generate::{self, GenerateOptions};
use matchpoint_hub::sandbox::faults::FaultSpec;
use matchpoint_hub::sandbox::{SandboxOptions, UPSTREAMS, start_with_fallback};
use matchpoint_schemas::MasterKey;

use super::Env;
use super::sync_cmd;

#[path = "demo_serve.rs"]
mod demo_serve;

const EXAMPLE_CONFIG: &str = include_str!("../../../deploy/matchpoint.example.toml");
/// First line of a config the demo wrote; such a config is rewritten by the next demo.
const DEMO_CONFIG_HEADER: &str = "# Written by `matchpoint demo`; rewritten by the next demo in this folder (remove this line to keep your edits).";
/// The mapping file of every source of the example config.
const MAPPINGS: &[(&str, &str)] = &[
    ("okc-1", include_str!("../../../deploy/mappings/okc-1.toml")),
    ("okc-2", include_str!("../../../deploy/mappings/okc-2.toml")),
    ("okc-3", include_str!("../../../deploy/mappings/okc-3.toml")),
    ("okc-4", include_str!("../../../deploy/mappings/okc-4.toml")),
    ("okc-5", include_str!("../../../deploy/mappings/okc-5.toml")),
    ("okc-6", include_str!("../../../deploy/mappings/okc-6.toml")),
    ("ris", include_str!("../../../deploy/mappings/ris.toml")),
    ("wmo", include_str!("../../../deploy/mappings/wmo.toml")),
];
/// Share of deliberately bad records in the demo data (they show up in quarantine).
const DEMO_BAD_SHARE: f64 = 0.02;
/// First base port the demo's sandbox tries, and the step to the next one.
const SANDBOX_BASE: u16 = 18000;
const SANDBOX_BASE_STEP: u16 = 100;
const SANDBOX_BASE_TRIES: u16 = 40;
/// The secrets the demo writes under `DIR/secrets` and how the example config's
/// environment-variable settings become file settings: (example line, file, setting).
const SECRETS: &[(&str, &str, &str)] = &[
    (
        "token_env = \"MATCHPOINT_OKC1_TOKEN\"",
        "secrets/okc-1.token",
        "token_file",
    ),
    (
        "token_env = \"MATCHPOINT_OKC5_TOKEN\"",
        "secrets/okc-5.token",
        "token_file",
    ),
    (
        "password_env = \"MATCHPOINT_OKC6_PASSWORD\"",
        "secrets/okc-6.password",
        "password_file",
    ),
    (
        "url_env = \"MATCHPOINT_SUPPLIER_DB_URL\"",
        "secrets/supplier-db.url",
        "url_file",
    ),
];

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

/// Writes `text` to `path` readable by the owner only (mode 0600), also when it exists.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating folder {}", parent.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting mode 0700 on {}", parent.display()))?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The demo config: the example config with every sandbox upstream at its actual address
/// (`hosts`: example `host:port` → actual `host:port`) and every secret read from its file
/// under `secrets/` instead of an environment variable; its header names the command
/// (`sandbox_cmd`) that serves the HTTP sources for later syncs.
fn demo_config(hosts: &[(String, String)], sandbox_cmd: &str) -> anyhow::Result<String> {
    // A comment line: no line break from a folder name may end it.
    let sandbox_cmd = sandbox_cmd.replace(['\n', '\r'], " ");
    let mut text = format!(
        "{DEMO_CONFIG_HEADER}\n# The HTTP sources (okc-1, okc-5, okc-6) need the sandbox running for a sync:\n#   {sandbox_cmd}\n{EXAMPLE_CONFIG}"
    );
    for (from, to) in hosts {
        anyhow::ensure!(
            text.contains(from.as_str()),
            "the example config has no source at {from}; the demo cannot point it at the sandbox"
        );
        text = text.replace(from.as_str(), to);
    }
    for (line, file, setting) in SECRETS {
        anyhow::ensure!(
            text.contains(line),
            "the example config has no `{line}`; the demo cannot point it at {file}"
        );
        text = text.replace(line, &format!("{setting} = \"{file}\""));
    }
    Ok(text)
}

/// Key, data of all eight sources, sandbox, config, sync, summary — everything under `dir`;
/// then (unless `listen` is `None`) the lookup API with demo users and ready-to-paste
/// requests, with the sandbox running until Ctrl-C.
pub async fn demo(
    dir: &Path,
    persons: u64,
    seed: u64,
    listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute, so the secrets and the printed commands work from any folder.
    let dir = &std::fs::canonicalize(dir)
        .with_context(|| format!("finding the absolute path of {}", dir.display()))?;
    println!("Matchpoint demo in {}", dir.display());

    let key = dir.join("matchpoint.key");
    if key.exists() {
        println!("  key:           {} (kept)", key.display());
    } else {
        MasterKey::generate_file(&key, "demo-k1")?;
        println!("  key:           {} (new, mode 0600)", key.display());
    }
    println!("  synthetic data for {persons} persons (seed {seed}):");
    let supplier_url = format!("sqlite://{}", dir.join("supplier.db").display());
    super::sandbox::write_sources(dir, persons, seed, DEMO_BAD_SHARE, Some(&supplier_url)).await?;

    // The HTTP upstreams, in this process, at the first base port with all ports free.
    let opts = SandboxOptions {
        persons,
        seed,
        faults: FaultSpec::default(),
        listen_base: SANDBOX_BASE,
        dir: Some(dir.clone()),
    };
    let (base, running) = start_with_fallback(&opts, SANDBOX_BASE_TRIES, SANDBOX_BASE_STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut hosts = Vec::new();
    for r in &running {
        let offset = UPSTREAMS
            .iter()
            .find(|d| d.name == r.name)
            .map(|d| d.port_offset)
            .unwrap_or_default();
        let actual = r.root.trim_start_matches("http://").to_owned();
        hosts.push((format!("127.0.0.1:{}", SANDBOX_BASE + offset), actual));
        println!(
            "{}  {}  {}  records: {}  auth: {}",
            r.name,
            r.kind,
            r.url,
            r.upstream.feed.len(),
            r.auth_hint
        );
    }

    // Secrets, in files only the owner can read; the config names the files.
    write_secret(&dir.join("secrets/okc-1.token"), "sandbox-okc-1")?;
    write_secret(&dir.join("secrets/okc-5.token"), "sandbox-okc-5")?;
    write_secret(&dir.join("secrets/okc-6.password"), "sandbox-okc-6")?;
    write_secret(&dir.join("secrets/supplier-db.url"), &supplier_url)?;

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
    let sandbox_cmd = format!(
        "{me} sandbox --dir {} --persons {persons} --seed {seed} --bad-share {DEMO_BAD_SHARE} --listen-base {base}",
        dir.display()
    );
    let cfg_path = dir.join("matchpoint.toml");
    let ours = std::fs::read_to_string(&cfg_path)
        .map(|t| t.starts_with(DEMO_CONFIG_HEADER))
        .unwrap_or(true);
    let cfg_state = if ours {
        let existed = cfg_path.exists();
        std::fs::write(&cfg_path, demo_config(&hosts, &sandbox_cmd)?)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        if existed { "rewritten" } else { "new" }
    } else {
        "kept: not written by the demo, so its source addresses may not match this sandbox"
    };
    write_if_missing(
        &dir.join("organisations.toml"),
        generate::ORGANISATIONS_TOML,
    )?;
    for (name, text) in MAPPINGS {
        write_if_missing(&dir.join(format!("mappings/{name}.toml")), text)?;
    }
    println!();
    println!("  config:        {} ({cfg_state})", cfg_path.display());
    println!("  index:         {}", dir.join("matchpoint.db").display());
    println!();

    let env = Env::load(&cfg_path).await?;
    let code = sync_cmd::sync(&env, &[], false, false).await?;
    let shown = cfg_path.display();
    println!();
    println!("Next:");
    println!("  {me} stats --config {shown}");
    println!("  {me} runs --config {shown}");
    println!("  {me} quarantine --config {shown}");
    println!(
        "The HTTP sources (okc-1, okc-5, okc-6) are served by this demo process. Once it has \
         stopped, later syncs need the sandbox running in another shell:"
    );
    println!("  {sandbox_cmd}");
    println!("  {me} sync --config {shown}     # then a second sync changes nothing");
    match listen {
        Some(listen) if code == ExitCode::SUCCESS => {
            println!("The sandbox keeps running while the API is served.");
            demo_serve::serve(&env.config, &listen, &me).await?;
            println!("Sandbox stopped.");
        }
        Some(_) => println!("\nThe sync did not succeed, so the API is not started."),
        None => println!("  {me} serve --config {shown}    # the lookup API"),
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_points_every_source_at_the_sandbox_and_secret_files() {
        let hosts: Vec<(String, String)> = UPSTREAMS
            .iter()
            .map(|d| {
                (
                    format!("127.0.0.1:{}", SANDBOX_BASE + d.port_offset),
                    format!("127.0.0.1:{}", 41000 + d.port_offset),
                )
            })
            .collect();
        let text = demo_config(&hosts, "matchpoint sandbox --dir D").expect("demo config");
        assert!(text.contains("#   matchpoint sandbox --dir D\n"));
        assert!(text.starts_with(DEMO_CONFIG_HEADER));
        for d in UPSTREAMS {
            assert!(text.contains(&format!("127.0.0.1:{}{}", 41000 + d.port_offset, d.path)));
        }
        assert!(!text.contains("_env = "), "an environment setting is left");
        let value: toml::Value = toml::from_str(&text).expect("valid TOML");
        let sources = value
            .get("source")
            .and_then(|s| s.as_array())
            .expect("sources");
        let names: Vec<&str> = sources
            .iter()
            .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
            .collect();
        for (name, _) in MAPPINGS {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert_eq!(names.len(), MAPPINGS.len());
    }

    #[test]
    fn demo_config_names_a_missing_example_address() {
        let err = demo_config(&[("127.0.0.1:9".to_owned(), "x".to_owned())], "")
            .expect_err("unknown address");
        assert!(err.to_string().contains("127.0.0.1:9"));
    }
}
