//! Tests of the synthetic data generator: determinism, valid and unique BSNs, the manifest,
//! the organisation registry, leak-safe surnames, and an end-to-end read through the real
//! XML reader and okc-2 mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufReader;
use std::sync::Arc;

use matchpoint_connectors::xml_export::{XmlExportFormat, XmlExportReader};
use matchpoint_mapping::{Mapper, MappingSpec};
use matchpoint_schemas::bsn::passes_elfproef;
use matchpoint_schemas::{KeyPurpose, MasterKey, Registry};

use super::catalogue::Domain;
use super::population::{Defect, Population, Status};
use super::*;

pub(super) const MAPPING: &str = include_str!("../../../deploy/mappings/okc-2.toml");

pub(super) fn run(persons: u64, seed: u64, bad_share: f64) -> (tempfile::TempDir, GenerateSummary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = GenerateOptions {
        persons,
        out: dir.path().join("out"),
        seed,
        bad_share,
    };
    let mut last = 0;
    let summary = generate(&opts, &mut |n| {
        assert!(n >= last, "progress goes back");
        last = n;
    })
    .expect("generate");
    assert_eq!(
        last, summary.records,
        "the last progress report is the total"
    );
    (dir, summary)
}

pub(super) fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

/// Text of the first `<name>…</name>` in `chunk`.
fn tag<'a>(chunk: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = chunk.find(&open)? + open.len();
    let end = chunk[start..].find(&close)? + start;
    Some(&chunk[start..end])
}

/// Value of the first `attr="…"` in `chunk`.
pub(super) fn attr<'a>(chunk: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = chunk.find(&key)? + key.len();
    let end = chunk[start..].find('"')? + start;
    Some(&chunk[start..end])
}

/// (id, body) of every dossier.
pub(super) fn dossiers(xml: &str) -> Vec<(&str, &str)> {
    xml.split("<dossier id=\"")
        .skip(1)
        .map(|chunk| {
            let id_end = chunk.find('"').expect("id");
            let body_end = chunk.find("</dossier>").expect("closed");
            (&chunk[..id_end], &chunk[..body_end])
        })
        .collect()
}

fn manifest(out: &Path) -> Vec<serde_json::Value> {
    read(&out.join(MANIFEST_FILE))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn same_seed_gives_identical_files_and_another_seed_does_not() {
    let (a, sa) = run(400, 11, 0.05);
    let (b, sb) = run(400, 11, 0.05);
    let (c, _) = run(400, 12, 0.05);
    assert_eq!(sa.records, sb.records);
    for name in ["okc-2/export.xml", MANIFEST_FILE, "README.txt"] {
        let x = fs::read(a.path().join("out").join(name)).expect("a");
        let y = fs::read(b.path().join("out").join(name)).expect("b");
        assert!(x == y, "{name} differs between two runs with the same seed");
    }
    let x = fs::read(okc2_export_path(&a.path().join("out"))).expect("a");
    let z = fs::read(okc2_export_path(&c.path().join("out"))).expect("c");
    assert_ne!(x, z, "another seed must give another export");
    assert_eq!(
        sa.files,
        vec![
            okc2_export_path(&a.path().join("out")),
            a.path().join("out").join(MANIFEST_FILE),
            a.path().join("out").join("README.txt"),
        ]
    );
    assert!(
        !a.path().join("out/okc-2/export.xml.partial").exists(),
        "no partial file is left behind"
    );
}

#[test]
fn the_header_announces_the_exact_record_count() {
    let (dir, s) = run(1_000, 3, 0.03);
    let xml = read(&okc2_export_path(&dir.path().join("out")));
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<export "));
    assert!(xml.ends_with("</export>\n"));
    let root = &xml[..xml.find("<dossier ").expect("records")];
    assert!(root.contains("xmlns=\"urn:matchpoint:okc-xml-export:1\""));
    assert!(root.contains("systeem=\"okc-2\""));
    let created = attr(root, "aangemaakt").expect("aangemaakt");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    let announced: u64 = attr(root, "aantal")
        .expect("aantal")
        .parse()
        .expect("number");
    let count = xml.matches("<dossier ").count() as u64;
    assert_eq!(announced, count);
    assert_eq!(announced, s.records);
    assert_eq!(s.persons, 1_000);
    assert!(
        s.households > 200 && s.households < 1_000,
        "{}",
        s.households
    );
}

#[test]
fn good_records_carry_valid_bsns_unique_per_person() {
    let (dir, _) = run(2_000, 5, 0.05);
    let out = dir.path().join("out");
    let xml = read(&okc2_export_path(&out));
    let bad_bsn: HashSet<String> = manifest(&out)
        .iter()
        .filter(|m| m["reason"] == "invalid_bsn")
        .map(|m| m["source_record_id"].as_str().expect("id").to_owned())
        .collect();
    let mut person_of: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut checked = 0;
    for (id, body) in dossiers(&xml) {
        let client = tag(body, "client").expect("client");
        let bsn = tag(client, "bsn").expect("bsn");
        assert_eq!(bsn.len(), 9, "{id}: {bsn}");
        let n: u32 = bsn.parse().expect("digits");
        if bad_bsn.contains(id) {
            assert!(
                !passes_elfproef(n),
                "{id} is listed as invalid_bsn but passes"
            );
            continue;
        }
        assert!(passes_elfproef(n), "{id}: BSN fails the elfproef");
        assert_ne!(n, 0);
        let who = (
            tag(client, "naam").expect("naam"),
            tag(client, "geboortedatum").expect("geboortedatum"),
        );
        let prev = person_of.insert(bsn, who);
        assert!(
            prev.is_none_or(|p| p == who),
            "BSN shared by {prev:?} and {who:?}"
        );
        checked += 1;
        // Related persons' BSNs are valid too.
        for rel in body.split("<relatie ").skip(1) {
            let b: u32 = attr(rel, "bsn").expect("bsn").parse().expect("digits");
            assert!(passes_elfproef(b));
        }
    }
    assert!(checked > 2_000, "{checked}");
    assert!(
        person_of.len() > 1_500,
        "most persons appear: {}",
        person_of.len()
    );
}

#[test]
fn the_manifest_lists_exactly_the_bad_records() {
    let (dir, s) = run(3_000, 9, 0.05);
    let out = dir.path().join("out");
    let xml = read(&okc2_export_path(&out));
    let entries = manifest(&out);
    assert_eq!(entries.len() as u64, s.bad_records);
    assert!(s.bad_records > 0);
    let share = s.bad_records as f64 / s.records as f64;
    assert!((0.03..0.07).contains(&share), "bad share {share}");

    let records = dossiers(&xml);
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, body) in &records {
        by_id.entry(id).or_default().push(body);
    }
    let mut reasons = BTreeMap::new();
    let mut listed = HashSet::new();
    for m in &entries {
        assert_eq!(m["source"], "okc-2");
        let id = m["source_record_id"].as_str().expect("id");
        let reason = m["reason"].as_str().expect("reason");
        *reasons.entry(reason.to_owned()).or_insert(0) += 1;
        let bodies = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in the export"));
        let body = bodies.last().expect("body");
        match reason {
            "invalid_bsn" => {
                assert_eq!(m["field"], "client/bsn");
                let n: u32 = tag(body, "bsn").expect("bsn").parse().expect("digits");
                assert!(!passes_elfproef(n));
            }
            "missing_field" => {
                assert_eq!(m["field"], "contactpersoon/naam");
                let contact = tag(body, "contactpersoon").expect("contact");
                assert!(tag(contact, "naam").is_none());
                assert!(
                    tag(contact, "telefoon").is_some(),
                    "the rest of the contact stays"
                );
            }
            "unknown_code" => {
                assert_eq!(m["field"], "domein");
                let code = tag(body, "domein").expect("domein");
                assert!(code.chars().all(|c| c.is_ascii_alphabetic()));
                assert!(Domain::ALL.iter().all(|d| d.code() != code), "{code}");
            }
            "bad_date" => {
                assert_eq!(m["field"], "periode/@begin");
                let begin = attr(body, "begin").expect("begin");
                assert!(chrono::NaiveDate::parse_from_str(begin, "%Y-%m-%d").is_err());
            }
            "duplicate_record" => {
                assert!(m["field"].is_null());
                assert_eq!(bodies.len(), 2, "{id} must occur exactly twice");
                assert_ne!(bodies[0], bodies[1], "the duplicate is a different record");
                let pos = records.iter().position(|(i, _)| i == &id).expect("pos");
                assert_eq!(
                    records[pos + 1].0,
                    id,
                    "the duplicate follows the first occurrence"
                );
            }
            other => panic!("unexpected reason {other}"),
        }
        assert!(
            listed.insert((id.to_owned(), reason.to_owned())),
            "listed twice"
        );
    }
    assert_eq!(reasons.len(), 5, "every defect occurs: {reasons:?}");
    let (lo, hi) = (reasons.values().min(), reasons.values().max());
    assert!(
        hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
        "defects are even: {reasons:?}"
    );

    // Every record not in the manifest is good.
    let bad_ids: HashSet<&str> = entries
        .iter()
        .filter(|m| m["reason"] != "duplicate_record")
        .map(|m| m["source_record_id"].as_str().expect("id"))
        .collect();
    for (id, body) in &records {
        if bad_ids.contains(id) {
            continue;
        }
        let n: u32 = tag(body, "bsn").expect("bsn").parse().expect("digits");
        assert!(passes_elfproef(n), "{id}");
        assert!(
            tag(tag(body, "contactpersoon").expect("c"), "naam").is_some(),
            "{id}"
        );
        let code = tag(body, "domein").expect("domein");
        assert!(Domain::ALL.iter().any(|d| d.code() == code), "{id}: {code}");
        let begin = attr(body, "begin").expect("begin");
        assert!(
            chrono::NaiveDate::parse_from_str(begin, "%Y-%m-%d").is_ok(),
            "{id}"
        );
    }
}

#[test]
fn no_bad_share_means_an_empty_manifest_and_unique_ids() {
    let (dir, s) = run(500, 1, 0.0);
    let out = dir.path().join("out");
    assert_eq!(s.bad_records, 0);
    assert_eq!(read(&out.join(MANIFEST_FILE)), "");
    let xml = read(&okc2_export_path(&out));
    let ids: Vec<&str> = dossiers(&xml).into_iter().map(|(id, _)| id).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len());
    for id in ids {
        assert!(id.len() == 13 && id.starts_with("OKC2-"), "{id}");
        assert!(id[5..].chars().all(|c| c.is_ascii_digit()), "{id}");
    }
}

#[test]
fn invalid_options_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    for share in [-0.1, 1.5, f64::NAN] {
        let opts = GenerateOptions {
            persons: 10,
            out: dir.path().to_owned(),
            seed: 1,
            bad_share: share,
        };
        let err = generate(&opts, &mut |_| {}).expect_err("refused");
        assert!(err.to_string().contains("from 0 to 1"), "{err}");
    }
    let opts = GenerateOptions {
        persons: MAX_PERSONS + 1,
        out: dir.path().to_owned(),
        seed: 1,
        bad_share: 0.0,
    };
    assert!(matches!(
        generate(&opts, &mut |_| {}),
        Err(GenerateError::TooManyPersons { .. })
    ));
    // An output path below a file cannot be created.
    let file = dir.path().join("file");
    fs::write(&file, "x").expect("write");
    let opts = GenerateOptions {
        persons: 10,
        out: file.join("out"),
        seed: 1,
        bad_share: 0.0,
    };
    let err = generate(&opts, &mut |_| {}).expect_err("refused");
    assert!(err.to_string().contains("file/out"), "{err}");
}

#[test]
fn households_are_consistent() {
    let catalogue =
        Catalogue::build(ORGANISATIONS_TOML, &mut ChaCha8Rng::seed_from_u64(1)).expect("catalogue");
    let today = export_date(1);
    let mut pop = Population::new(1, 20_000, 0.02, today, &catalogue);
    let (mut multi, mut with_coordinator, mut persons) = (0, 0, 0);
    let mut sizes = BTreeMap::new();
    while let Some(h) = pop.next_household().expect("household") {
        persons += h.persons.len();
        *sizes.entry(h.persons.len()).or_insert(0) += 1;
        let adults = h.persons.iter().filter(|p| p.adult).count();
        assert!((1..=2).contains(&adults));
        assert!(h.persons.len() - adults <= 4);
        for p in &h.persons {
            let age = population::age_on(p.birth, today);
            assert_eq!(p.adult, age >= 18, "age {age}");
            if !p.adult {
                for parent in h.persons.iter().filter(|q| q.adult) {
                    assert!(population::age_on(parent.birth, today) >= age + 18);
                }
            }
        }
        let coordinators = h.records.iter().filter(|r| r.coordinator).count();
        assert!(coordinators <= 1);
        let orgs: BTreeSet<usize> = h.records.iter().map(|r| r.org).collect();
        if orgs.len() > 1 {
            multi += 1;
            with_coordinator += coordinators;
        }
        let per_person = |i| {
            h.records
                .iter()
                .filter(|r| r.person == i && r.defect != Some(Defect::Duplicate))
                .count()
        };
        for (i, _) in h.persons.iter().enumerate() {
            assert!(
                (1..=3).contains(&per_person(i)),
                "1-3 involvements per person"
            );
        }
        for r in &h.records {
            assert!(r.start <= today && r.start >= h.persons[r.person].birth);
            assert!(r.start.format("%Y").to_string().as_str() >= "2019");
            match r.status {
                Status::Ended => assert!(r.end.is_some_and(|e| e > r.start && e <= today)),
                _ => assert!(r.end.is_none()),
            }
        }
    }
    assert_eq!(persons, 20_000);
    assert!(sizes.len() >= 5, "household sizes vary: {sizes:?}");
    let share = with_coordinator as f64 / multi as f64;
    assert!((0.3..0.5).contains(&share), "coordinator share {share}");
}

#[test]
fn the_export_reads_and_maps_exactly_as_the_manifest_says() {
    let (dir, s) = run(2_500, 17, 0.04);
    let out = dir.path().join("out");
    let mut expected: BTreeSet<(String, String, Option<String>)> = manifest(&out)
        .iter()
        .map(|m| {
            (
                m["source_record_id"].as_str().expect("id").to_owned(),
                m["reason"].as_str().expect("reason").to_owned(),
                m["field"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(expected.len() as u64, s.bad_records);

    let spec = MappingSpec::parse(MAPPING, "okc-2.toml").expect("mapping");
    let registry = Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry"));
    let key = MasterKey::from_secret("k1", &[7u8; 32]).expect("key");
    let mapper = Mapper::new(
        "okc-2",
        spec,
        registry,
        key.pseudonymiser(KeyPurpose::Index),
    );
    let file = fs::File::open(okc2_export_path(&out)).expect("open");
    let mut reader = XmlExportReader::new(
        BufReader::new(file),
        "export.xml",
        XmlExportFormat::default(),
    );
    let mut seen = HashSet::new();
    let mut found = BTreeSet::new();
    let mut accepted = 0u64;
    let mut total = 0u64;
    for item in &mut reader {
        let raw = item
            .expect("the delivery is well-formed")
            .expect("no record is malformed");
        total += 1;
        let id = raw.record_id.clone().expect("id");
        let result = mapper.map(&raw);
        if !seen.insert(id.clone()) {
            assert!(
                result.is_ok(),
                "{id}: a duplicate is otherwise a good record"
            );
            found.insert((id, "duplicate_record".to_owned(), None));
            continue;
        }
        match result {
            Ok(inv) => {
                accepted += 1;
                assert!(!inv.contact.name.is_empty());
            }
            Err(rej) => {
                found.insert((id, rej.reason.code().to_owned(), rej.field));
            }
        }
    }
    assert_eq!(reader.announced_count(), Some(total));
    assert_eq!(total, s.records);
    assert_eq!(accepted + s.bad_records, s.records);
    let missing: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    expected.clear();
}
