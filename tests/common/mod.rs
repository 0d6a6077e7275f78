//! Shared helpers for the end-to-end tests: a scratch installation (key, generated data,
//! config) and a runner for the real `matchpoint` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_matchpoint")
}

/// A scratch installation in a temporary folder.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub store_url: String,
}

impl Install {
    /// The published rows of one source, identity-free (no pseudonyms), one line each.
    pub fn published_rows(&self, source: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.db()).expect("db");
        let mut st = conn
            .prepare(
                "SELECT source_record_id, organisation_code, organisation_name, COALESCE(team, ''),
                        life_domain, COALESCE(goal, ''), contact_name, COALESCE(contact_role, ''),
                        COALESCE(contact_phone, ''), COALESCE(contact_email, ''), start_date,
                        COALESCE(end_date, ''), status, coordinator, sensitive,
                        COALESCE(purge_after, ''), ended_by_run IS NOT NULL,
                        (SELECT group_concat(kind, ',') FROM (SELECT kind FROM relations r
                           WHERE r.source = i.source AND r.source_record_id = i.source_record_id
                           ORDER BY kind))
                 FROM involvements i WHERE source = ?1 ORDER BY source_record_id",
            )
            .expect("prepare");
        let mut q = st.query([source]).expect("query");
        let mut out = Vec::new();
        while let Some(r) = q.next().expect("row") {
            let cells: Vec<String> = (0..18)
                .map(|i| match r.get_ref(i).expect("cell") {
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Null => String::new(),
                    other => format!("{other:?}"),
                })
                .collect();
            out.push(cells.join("|"));
        }
        out
    }

    pub fn cursor(&self, source: &str) -> Option<String> {
        let conn = rusqlite::Connection::open(self.db()).expect("db");
        conn.query_row(
            "SELECT cursor FROM sources WHERE name = ?1",
            [source],
            |r| r.get::<_, Option<String>>(0),
        )
        .ok()
        .flatten()
    }

    /// Key, registry, mapping and config; data generated for `persons` with `seed`.
    pub fn new(persons: u64, seed: u64, bad_share: f64) -> Install {
        Self::with_store(persons, seed, bad_share, None)
    }

    /// Like [`Install::new`], with a store URL (default: SQLite in the folder).
    pub fn with_store(persons: u64, seed: u64, bad_share: f64, store: Option<&str>) -> Install {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let store_url = store
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("matchpoint.db").display()));
        let install = Install { dir, store_url };
        let out = install.mp(&["keygen", "--out", "matchpoint.key", "--key-id", "test-k1"]);
        assert!(out.status.success(), "keygen: {}", stderr(&out));
        std::fs::copy(
            root.join("deploy/organisations.toml"),
            install.path("organisations.toml"),
        )
        .expect("copy registry");
        std::fs::create_dir_all(install.path("mappings")).expect("mkdir");
        std::fs::copy(
            root.join("deploy/mappings/okc-2.toml"),
            install.path("mappings/okc-2.toml"),
        )
        .expect("copy mapping");
        install.write_config(200, 0.10);
        install.generate(persons, seed, bad_share);
        install
    }

    /// Writes `matchpoint.toml` with a batch size and shrink limit.
    pub fn write_config(&self, batch_size: usize, max_end_share: f64) {
        let text = format!(
            "store = \"{}\"\nkey_file = \"matchpoint.key\"\norganisations = \"organisations.toml\"\n\
             [sync]\nmax_end_share = {max_end_share}\nbatch_size = {batch_size}\n\
             [[source]]\nname = \"okc-2\"\nkind = \"xml_export\"\nlocation = \"data/okc-2/export.xml\"\n\
             mode = \"full\"\nschedule = \"0 30 2 * * *\"\nmapping = \"mappings/okc-2.toml\"\n",
            self.store_url
        );
        std::fs::write(self.path("matchpoint.toml"), text).expect("write config");
    }

    /// Runs `matchpoint generate` into `data/`.
    pub fn generate(&self, persons: u64, seed: u64, bad_share: f64) {
        let _ = std::fs::remove_dir_all(self.path("data"));
        let out = self.mp(&[
            "generate",
            "--persons",
            &persons.to_string(),
            "--out",
            "data",
            "--seed",
            &seed.to_string(),
            "--bad-share",
            &bad_share.to_string(),
        ]);
        assert!(out.status.success(), "generate: {}", stderr(&out));
    }

    /// A path inside the installation.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The XML export of okc-2.
    pub fn export(&self) -> PathBuf {
        self.path("data/okc-2/export.xml")
    }

    /// Runs the binary in the installation folder.
    pub fn mp(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run matchpoint")
    }

    /// A command for the binary in the installation folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("MATCHPOINT_KEY_FILE")
            .env_remove("MATCHPOINT_CONFIG")
            .env_remove("MATCHPOINT_PAUSE_AT")
            .env("MATCHPOINT_LOG", "debug");
        c
    }

    /// `matchpoint sync --json`, parsed; asserts the process ran.
    pub fn sync_json(&self) -> (bool, serde_json::Value) {
        let out = self.mp(&["sync", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("sync --json output: {e}\n{}", stderr(&out)));
        (out.status.success(), v[0].clone())
    }

    /// The SQLite database path.
    pub fn db(&self) -> PathBuf {
        self.path("matchpoint.db")
    }
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Published index content of a SQLite store, without run ids and timestamps:
/// one line per involvement and per relation, sorted.
pub fn index_snapshot(db: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    if !db.exists() {
        return rows;
    }
    let conn = rusqlite::Connection::open(db).expect("open db");
    let has_index: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'involvements'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    if !has_index {
        return rows;
    }
    let mut st = conn
        .prepare(
            "SELECT source, source_record_id, hex(person), key_id, organisation_code, life_domain,
                    status, COALESCE(end_date, ''), hex(content_hash), COALESCE(goal, ''),
                    contact_name, coordinator
             FROM involvements ORDER BY source, source_record_id",
        )
        .expect("prepare");
    let mut q = st.query([]).expect("query");
    while let Some(r) = q.next().expect("row") {
        let cells: Vec<String> = (0..12)
            .map(|i| match r.get_ref(i).expect("cell") {
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        rows.push(format!("I {}", cells.join("|")));
    }
    let mut st = conn
        .prepare(
            "SELECT source, source_record_id, kind, hex(other) FROM relations ORDER BY 1, 2, 3, 4",
        )
        .expect("prepare");
    let mut q = st.query([]).expect("query");
    while let Some(r) = q.next().expect("row") {
        let a: String = r.get(0).expect("c");
        let b: String = r.get(1).expect("c");
        let c: String = r.get(2).expect("c");
        let d: String = r.get(3).expect("c");
        rows.push(format!("R {a}|{b}|{c}|{d}"));
    }
    rows
}

/// Every 9-digit run with no digit on either side.
pub fn nine_digit_runs(text: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && text[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 9 {
                out.push(String::from_utf8_lossy(&text[start..i]).into_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The client BSNs in an export (text of `<bsn>` elements and `bsn="…"` attributes).
pub fn export_bsns(export: &Path) -> std::collections::HashSet<String> {
    let text = std::fs::read_to_string(export).expect("read export");
    let mut set = std::collections::HashSet::new();
    for part in text.split("<bsn>").skip(1) {
        if let Some(end) = part.find("</bsn>") {
            set.insert(part[..end].trim().to_owned());
        }
    }
    for part in text.split("bsn=\"").skip(1) {
        if let Some(end) = part.find('"') {
            set.insert(part[..end].to_owned());
        }
    }
    set.retain(|s| s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit()));
    set
}

/// Rewrites an export keeping only records whose index passes `keep`, with a correct count.
pub fn rewrite_export(export: &Path, mut edit: impl FnMut(usize, &str) -> Option<String>) {
    let text = std::fs::read_to_string(export).expect("read export");
    let start = text.find("<dossier ").expect("has records");
    let end = text.rfind("</export>").expect("closing root");
    let head = &text[..start];
    let body = &text[start..end];
    let mut kept = Vec::new();
    for (i, chunk) in body.split_inclusive("</dossier>").enumerate() {
        if !chunk.contains("<dossier ") {
            continue;
        }
        if let Some(c) = edit(i, chunk) {
            kept.push(c);
        }
    }
    let count_start = head.find("aantal=\"").expect("aantal") + 8;
    let count_end = count_start + head[count_start..].find('"').expect("quote");
    let head = format!(
        "{}{}{}",
        &head[..count_start],
        kept.len(),
        &head[count_end..]
    );
    let mut out = head;
    for k in &kept {
        out.push_str(k);
    }
    out.push_str("\n</export>\n");
    std::fs::write(export, out).expect("write export");
}

/// Starts `matchpoint ARGS` with `MATCHPOINT_PAUSE_AT=point` and returns once the process
/// reports that it paused there, with everything it printed on stderr so far. The child
/// blocks until its stdin closes or it is killed.
pub fn spawn_paused(
    inst: &Install,
    args: &[&str],
    point: &str,
) -> (
    std::process::Child,
    Vec<u8>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    use std::io::BufRead;
    let mut child = inst
        .command(args)
        .env("MATCHPOINT_PAUSE_AT", point)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn matchpoint");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).expect("read stderr");
        assert!(
            n > 0,
            "matchpoint ended before reaching {point}:\n{}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(line.as_bytes());
        if line.trim() == format!("paused at {point}") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe; the rest is returned.
    let rest = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut rest);
        rest
    });
    (child, seen, rest)
}

/// Kills a paused child with SIGKILL and checks it died.
pub fn kill(mut child: std::process::Child, point: &str) {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the process must have died at {point}");
}
