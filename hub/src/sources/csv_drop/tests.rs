//! The CSV drop from file to canonical record, and through a whole sync.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::NaiveDate;
use matchpoint_mapping::Mapper;
use matchpoint_schemas::{
    Bsn, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey, Registry, RelationKind,
};

use crate::config::{Config, SourceConfig};
use crate::generate::okc3_csv::{okc3_feed, okc3_file_name, write_okc3_csv};
use crate::sources::{OpenContext, open};
use crate::store::{RunStatus, Store};
use crate::sync::{Progress, SyncContext, sync_source};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(dir: &Path, location: &Path, mapping: &Path) -> Config {
    let text = format!(
        r#"
store = "sqlite://{store}"
organisations = "{root}/deploy/organisations.toml"

[[source]]
name = "okc-3"
kind = "csv_drop"
location = "{location}"
mode = "full"
schedule = "0 0 4 * * *"
mapping = "{mapping}"
[source.csv]
id_column = "dossiernummer"
"#,
        store = dir.join("index.db").display(),
        root = root().display(),
        location = location.display(),
        mapping = mapping.display(),
    );
    Config::parse(&text, "test.toml", dir).expect("config parses")
}

#[test]
fn final_line_break_is_required_unless_the_source_says_optional() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parse = |csv_lines: &str| {
        let text = format!(
            r#"
store = "sqlite://{store}"
organisations = "{root}/deploy/organisations.toml"

[[source]]
name = "okc-3"
kind = "csv_drop"
location = "{location}"
mode = "full"
schedule = "0 0 4 * * *"
mapping = "{root}/deploy/mappings/okc-3.toml"
[source.csv]
id_column = "dossiernummer"
{csv_lines}
"#,
            store = dir.path().join("index.db").display(),
            root = root().display(),
            location = dir.path().display(),
        );
        Config::parse(&text, "test.toml", dir.path())
    };
    let default = parse("").expect("parses");
    assert!(super::format_for(&default.sources[0]).require_final_line_break);
    let required = parse("final_line_break = \"required\"").expect("parses");
    assert!(super::format_for(&required.sources[0]).require_final_line_break);
    let optional = parse("final_line_break = \"optional\"").expect("parses");
    assert!(!super::format_for(&optional.sources[0]).require_final_line_break);
    let err = parse("final_line_break = \"sometimes\"").expect_err("unknown value");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("sometimes") && msg.contains("optional"),
        "{msg}"
    );
}

fn key() -> MasterKey {
    MasterKey::from_secret("test", &[9u8; 32]).expect("key")
}

fn read_all(source: &SourceConfig) -> Vec<matchpoint_connectors::RecordResult> {
    let cx = OpenContext {
        source,
        cursor: None,
        full: true,
        cancel: Arc::new(AtomicBool::new(false)),
        state: None,
    };
    let mut stream = open(&cx).expect("opens").expect("a delivery").stream;
    let mut out = Vec::new();
    while let Some(r) = stream.next_record().expect("reads") {
        out.push(r);
    }
    out
}

#[test]
fn the_golden_csv_maps_to_canonical_involvements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &root().join("schemas/formats/examples/okc-3.csv"),
        &root().join("deploy/mappings/okc-3.toml"),
    );
    let source = &cfg.sources[0];
    let key = key();
    let pseudo = key.pseudonymiser(KeyPurpose::Index);
    let mapper = Mapper::new(
        "okc-3",
        source.mapping_spec.clone().expect("mapping"),
        Arc::new(Registry::load(&cfg.organisations).expect("registry")),
        pseudo.clone(),
    );
    let items = read_all(source);
    assert_eq!(items.len(), 4);
    let map = |i: usize| {
        mapper
            .map(items[i].as_ref().expect("readable"))
            .expect("maps")
    };
    let parent = pseudo.pseudonymise(&Bsn::parse("111222333").expect("bsn"));

    let first = map(0);
    assert_eq!(first.person, parent);
    assert_eq!(first.organisation_code, "OKC-ZUID");
    assert_eq!(first.life_domain, LifeDomain::Parenting);
    assert_eq!(
        first.goal.as_deref(),
        Some("Opvoedondersteuning; twee keer per maand")
    );
    assert_eq!(first.contact.name, "Renée Brouwer");
    assert_eq!(
        first.start_date,
        NaiveDate::from_ymd_opt(2025, 2, 2).expect("date")
    );
    assert_eq!(first.status, InvolvementStatus::Active);
    assert!(first.coordinator);
    assert_eq!(first.relations.len(), 2);
    assert!(
        first
            .relations
            .iter()
            .all(|r| r.kind == RelationKind::Child)
    );

    let second = map(1);
    assert_eq!(second.contact.name, "Zoë Dekker");
    assert_eq!(
        second.goal.as_deref(),
        Some("Consultatiebureau:\r\nvaccinaties en groei")
    );
    assert_eq!(second.relations.len(), 1);
    assert_eq!(second.relations[0].kind, RelationKind::Parent);
    assert_eq!(
        second.relations[0].other, parent,
        "the child links to the parent"
    );

    let third = map(2);
    assert_eq!(third.contact.name, "Noël van Dijk");
    assert_eq!(third.team.as_deref(), Some("Team \"De Brug\""));
    assert_eq!(third.status, InvolvementStatus::Ended);
    assert_eq!(third.end_date, NaiveDate::from_ymd_opt(2024, 6, 30));
    assert_eq!(third.organisation_code, "JH-KOERS");

    let fourth = items[3].as_ref().expect_err("too few fields");
    assert_eq!(fourth.record_id.as_deref(), Some("OKC3-00000004"));
}

struct Sync {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    drops: PathBuf,
    mapping: PathBuf,
    ctx: SyncContext,
}

impl Sync {
    async fn new() -> Sync {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let drops = path.join("drops");
        std::fs::create_dir_all(&drops).expect("drops dir");
        let mapping = path.join("okc-3.toml");
        std::fs::copy(root().join("deploy/mappings/okc-3.toml"), &mapping).expect("copy");
        let cfg = config(&path, &drops, &mapping);
        let store = Store::open(&cfg.store).await.expect("store");
        let ctx = SyncContext {
            store,
            key: Arc::new(key()),
            registry: Arc::new(Registry::load(&cfg.organisations).expect("registry")),
            max_end_share: 0.5,
            quarantine_raw_days: 1,
            batch_size: 200,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        Sync {
            _dir: dir,
            dir: path,
            drops,
            mapping,
            ctx,
        }
    }

    /// Syncs with the configuration and mapping file as they are now (re-read each time).
    async fn run(&self) -> crate::store::RunRecord {
        let cfg = config(&self.dir, &self.drops, &self.mapping);
        sync_source(
            &self.ctx,
            &cfg.sources[0],
            false,
            Arc::new(Progress::default()),
        )
        .await
        .expect("sync ran")
    }
}

#[tokio::test]
async fn a_generated_drop_syncs_and_a_header_rename_needs_only_the_mapping() {
    let s = Sync::new().await;
    let feed = okc3_feed(300, 5).expect("feed");
    let drop = write_okc3_csv(&feed, 0, &s.drops, 40).expect("write");
    assert!(drop.bad > 0 && drop.records > 100, "{drop:?}");
    let run = s.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, drop.records);
    assert_eq!(run.counts.rejected, drop.bad);
    assert_eq!(run.counts.inserted, drop.records - drop.bad);
    let relations = s.ctx.store.relations("okc-3").await.expect("relations");
    assert!(!relations.is_empty());

    // The supplier renames a header in the next drop.
    let bytes = std::fs::read(&drop.path).expect("read");
    let end = bytes.iter().position(|&b| b == b'\n').expect("header line");
    let header =
        String::from_utf8_lossy(&bytes[..end]).replace(";contactpersoon;", ";naam_contactpersoon;");
    let mut renamed = header.into_bytes();
    renamed.extend_from_slice(&bytes[end..]);
    let next = s.drops.join(okc3_file_name(&feed, 1));
    std::fs::write(&next, renamed).expect("write renamed");
    let before = s.ctx.store.involvements("okc-3").await.expect("index");

    // With the old mapping the delivery fails, naming the missing column; nothing changes.
    let run = s.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(error.contains("`contactpersoon`"), "{error}");
    assert_eq!(
        s.ctx
            .store
            .involvements("okc-3")
            .await
            .expect("index")
            .len(),
        before.len()
    );

    // Renaming it in the mapping file alone is enough: no rebuild.
    let text = std::fs::read_to_string(&s.mapping).expect("mapping");
    let text = text.replace(
        "contact_name = \"contactpersoon\"",
        "contact_name = \"naam_contactpersoon\"",
    );
    std::fs::write(&s.mapping, text).expect("write mapping");
    let run = s.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, drop.records);
    assert_eq!(run.counts.unchanged, drop.records - drop.bad);
    assert_eq!(run.counts.ended, 0);

    // An empty drop (the header only) would end everything: the shrink guard holds it.
    let header_only = String::from_utf8_lossy(&std::fs::read(&next).expect("read"))
        .lines()
        .next()
        .map(|h| format!("{h}\r\n"))
        .expect("header");
    std::fs::write(s.drops.join(okc3_file_name(&feed, 2)), header_only).expect("write");
    let run = s.run().await;
    assert_eq!(run.status, RunStatus::Held, "{:?}", run.error);
    assert_eq!(
        s.ctx
            .store
            .involvements("okc-3")
            .await
            .expect("index")
            .len(),
        before.len()
    );
    // A drop cut off inside a quoted field fails the run.
    let mut cut = std::fs::read(&next).expect("read");
    let quote = cut.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    cut.truncate(quote + 1);
    cut.extend_from_slice(b"OKC3-99999999;111222333;\"unterminated");
    std::fs::write(s.drops.join(okc3_file_name(&feed, 3)), cut).expect("write");
    let run = s.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.unwrap_or_default().contains("truncated"),
        "a cut-off drop is reported as truncated"
    );
}
