//! Lifecycle tests of the iWmo source: messages written as files with the generator's writer,
//! read through `open()` and mapped with the shipped mapping `deploy/mappings/wmo.toml` and
//! registry `deploy/organisations.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::NaiveDate;
use matchpoint_connectors::iwmo::{
    AssignedProduct, Body, DeliveryStatus, MessageKind, Product, StartedProduct, StoppedProduct,
};
use matchpoint_mapping::Mapper;
use matchpoint_schemas::{
    EndReason, Involvement, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey, Registry,
};

use super::*;
use crate::config::Config;
use crate::generate::ORGANISATIONS_TOML;
use crate::generate::iwmo::{OutClient, OutMessage, header, message_xml};

pub(super) const BSN: &str = "123456782";
pub(super) const OTHER_BSN: &str = "999999990";
const BAD_BSN: &str = "123456789";
pub(super) const THUIS: &str = "98000001";
const OPVANG: &str = "98000005";

pub(super) fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).expect("date")
}

pub(super) fn client(bsn: &str) -> OutClient {
    OutClient {
        bsn: bsn.into(),
        birth: NaiveDate::from_ymd_opt(1950, 4, 1).expect("date"),
        birth_use: None,
        gender: "1".into(),
        surname: "Zonnebloem".into(),
        prefix: None,
        initials: "K".into(),
    }
}

pub(super) fn product(category: &str) -> Option<Product> {
    Some(Product {
        category: category.into(),
        code: Some(format!("{category}A01")),
    })
}

fn msg(
    kind: MessageKind,
    id: &str,
    on: NaiveDate,
    provider: &str,
    bsn: &str,
    body: Body,
) -> OutMessage {
    OutMessage {
        header: header(kind, provider, id, on),
        client: client(bsn),
        body,
        every_optional: false,
    }
}

pub(super) fn assigned(
    number: u64,
    category: &str,
    start: NaiveDate,
    reason: Option<&str>,
) -> AssignedProduct {
    AssignedProduct {
        number,
        provider_reference: None,
        product: product(category),
        assigned_on: start,
        assigned_at: "09:00:00".into(),
        start,
        end: Some(day(12, 31)),
        change_reason: reason.map(str::to_owned),
        extent: None,
        budget: None,
    }
}

pub(super) fn a301(
    id: &str,
    on: NaiveDate,
    bsn: &str,
    products: Vec<AssignedProduct>,
) -> OutMessage {
    msg(
        MessageKind::Wmo301,
        id,
        on,
        THUIS,
        bsn,
        Body::Assignment(products),
    )
}

pub(super) fn started(
    number: Option<u64>,
    begin: NaiveDate,
    status: DeliveryStatus,
) -> StartedProduct {
    StartedProduct {
        number,
        product: product("02"),
        assignment_start: Some(day(3, 1)),
        start: begin,
        status,
    }
}

pub(super) fn s305(id: &str, on: NaiveDate, p: StartedProduct) -> OutMessage {
    msg(
        MessageKind::Wmo305,
        id,
        on,
        THUIS,
        BSN,
        Body::Start(vec![p]),
    )
}

pub(super) fn stopped(end: NaiveDate, reason: &str, status: DeliveryStatus) -> StoppedProduct {
    StoppedProduct {
        number: Some(1),
        product: product("02"),
        assignment_start: Some(day(3, 1)),
        start: day(3, 5),
        reason: reason.into(),
        end,
        status,
    }
}

pub(super) fn e307(id: &str, on: NaiveDate, p: StoppedProduct) -> OutMessage {
    msg(MessageKind::Wmo307, id, on, THUIS, BSN, Body::Stop(vec![p]))
}

/// A message folder and the source reading it.
pub(super) struct Harness {
    pub(super) dir: tempfile::TempDir,
    pub(super) source: SourceConfig,
    mapper: Mapper,
    cursor: Option<String>,
}

/// What one run delivered, mapped.
#[derive(Debug, Default)]
struct Outcome {
    records: BTreeMap<String, Involvement>,
    /// (record id, reason code, reason)
    rejects: Vec<(Option<String>, String, String)>,
}

impl Outcome {
    fn only(&self) -> &Involvement {
        assert_eq!(self.records.len(), 1, "{:?}", self.records.keys());
        self.records.values().next().expect("one record")
    }
}

pub(super) fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

impl Harness {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            r#"
[[source]]
name = "wmo"
kind = "iwmo"
location = "{}"
mode = "incremental"
schedule = "0 0 * * * *"
mapping = "mappings/wmo.toml"
"#,
            dir.path().display()
        );
        let cfg = Config::parse(&text, "test.toml", &deploy()).expect("config");
        let source = cfg.sources[0].clone();
        let registry = Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry"));
        let key = MasterKey::from_secret("k1", &[7u8; 32]).expect("key");
        let mapper = Mapper::new(
            "wmo",
            source.mapping_spec.clone().expect("mapping"),
            registry,
            key.pseudonymiser(KeyPurpose::Index),
        );
        Harness {
            dir,
            source,
            mapper,
            cursor: None,
        }
    }

    /// Writes a message and checks it against the official schema (when xmllint is there).
    pub(super) fn put(&self, file: &str, m: &OutMessage) {
        self.put_unchecked(file, m);
        if let Some(lint) = crate::generate::iwmo::tests::xmllint() {
            crate::generate::iwmo::tests::validate(
                lint,
                m.header.kind,
                &self.dir.path().join(file),
            );
        }
    }

    pub(super) fn put_unchecked(&self, file: &str, m: &OutMessage) {
        std::fs::write(self.dir.path().join(file), message_xml(m)).expect("write");
    }

    fn put_raw(&self, file: &str, xml: &str) {
        std::fs::write(self.dir.path().join(file), xml).expect("write");
    }

    /// One incremental run from the last committed cursor; commits the new cursor.
    fn run(&mut self) -> Result<Option<Outcome>, String> {
        let out = self.read(false)?;
        Ok(out.map(|(o, c)| {
            if c.is_some() {
                self.cursor = c;
            }
            o
        }))
    }

    fn read(&self, full: bool) -> Result<Option<(Outcome, Option<String>)>, String> {
        let cx = OpenContext {
            source: &self.source,
            cursor: self.cursor.as_deref(),
            full,
            cancel: Arc::new(AtomicBool::new(false)),
            state: None,
        };
        let Some(opened) = open(&cx)? else {
            return Ok(None);
        };
        let mut stream = opened.stream;
        let mut out = Outcome::default();
        while let Some(item) = stream.next_record().map_err(|e| e.to_string())? {
            match item {
                Ok(raw) => match self.mapper.map(&raw) {
                    Ok(inv) => {
                        let id = inv.source_record_id.clone();
                        assert!(
                            out.records.insert(id.clone(), inv).is_none(),
                            "{id} delivered twice"
                        );
                    }
                    Err(rej) => out.rejects.push((
                        raw.record_id.clone(),
                        rej.reason.code().to_owned(),
                        rej.reason.to_string(),
                    )),
                },
                Err(rec) => out
                    .rejects
                    .push((rec.record_id, "malformed".into(), rec.reason)),
            }
        }
        Ok(Some((out, stream.cursor())))
    }

    fn run_ok(&mut self) -> Outcome {
        self.run().expect("run").expect("something new")
    }
}

#[test]
fn assign_start_stop_makes_an_involvement_planned_active_ended() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let inv = out.only();
    assert_eq!(inv.source_record_id, format!("{THUIS}-1"));
    assert_eq!(inv.status, InvolvementStatus::Planned);
    assert_eq!(inv.organisation_code, "WMO-THUISBEGELEIDING");
    assert_eq!(inv.life_domain, LifeDomain::SocialSupport);
    assert_eq!(inv.goal.as_deref(), Some("Begeleiding (product 02A01)"));
    assert_eq!(inv.contact.name, "Zorgloket Thuisbegeleiding Amstel");
    assert_eq!(inv.start_date, day(3, 1));
    assert_eq!(inv.end_date, Some(day(12, 31)));
    assert_eq!(inv.end_reason, None);
    assert!(!inv.sensitive);
    assert_eq!(h.cursor.as_deref(), Some("001.xml"));

    h.put(
        "002.xml",
        &s305(
            "S1",
            day(3, 6),
            started(Some(1), day(3, 5), DeliveryStatus::First),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(inv.status, InvolvementStatus::Active);
    assert_eq!(inv.start_date, day(3, 5));

    h.put(
        "003.xml",
        &e307(
            "E1",
            day(6, 1),
            stopped(day(5, 31), "19", DeliveryStatus::First),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(inv.status, InvolvementStatus::Ended);
    assert_eq!(inv.start_date, day(3, 5));
    assert_eq!(inv.end_date, Some(day(5, 31)));
    assert_eq!(
        inv.end_reason,
        Some(EndReason {
            code: "19".into(),
            description: "Levering volgens plan beeindigd".into()
        })
    );
    assert!(inv.purge_after.is_some());
    assert_eq!(h.cursor.as_deref(), Some("003.xml"));

    // Nothing new: a quiet night.
    assert!(h.run().expect("run").is_none());
}

#[test]
fn a_later_wmo301_changes_or_voids_the_assignment() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    h.run_ok();
    // Shortened ("Herbeoordeling: verkorting"): the end date follows.
    let shorter = AssignedProduct {
        end: Some(day(9, 30)),
        ..assigned(1, "02", day(3, 1), Some("05"))
    };
    h.put("002.xml", &a301("T2", day(3, 3), BSN, vec![shorter]));
    let inv = h.run_ok().only().clone();
    assert_eq!(inv.status, InvolvementStatus::Planned);
    assert_eq!(inv.end_date, Some(day(9, 30)));
    // Voided (RedenWijziging 13): the involvement ends where it started.
    h.put(
        "003.xml",
        &a301(
            "T3",
            day(3, 4),
            BSN,
            vec![assigned(1, "02", day(3, 1), Some("13"))],
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(inv.status, InvolvementStatus::Ended);
    assert_eq!(inv.end_date, Some(inv.start_date));
}

#[test]
fn corrections_and_withdrawals_of_starts_and_stops() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    h.put(
        "002.xml",
        &s305(
            "S1",
            day(3, 6),
            started(Some(1), day(3, 5), DeliveryStatus::First),
        ),
    );
    assert_eq!(h.run_ok().only().start_date, day(3, 5));
    // Corrected start date (StatusAanlevering 2).
    h.put(
        "003.xml",
        &s305(
            "S2",
            day(3, 7),
            started(Some(1), day(3, 4), DeliveryStatus::Corrected),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(
        (inv.status, inv.start_date),
        (InvolvementStatus::Active, day(3, 4))
    );
    // Start withdrawn (3): back to planned, from the assignment's start.
    h.put(
        "004.xml",
        &s305(
            "S3",
            day(3, 8),
            started(Some(1), day(3, 4), DeliveryStatus::Withdrawn),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(
        (inv.status, inv.start_date),
        (InvolvementStatus::Planned, day(3, 1))
    );
    // Started again, then stopped.
    h.put(
        "005.xml",
        &s305(
            "S4",
            day(3, 9),
            started(Some(1), day(3, 9), DeliveryStatus::First),
        ),
    );
    h.put(
        "006.xml",
        &e307(
            "E1",
            day(5, 2),
            stopped(day(5, 1), "21", DeliveryStatus::First),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(
        (inv.status, inv.end_date),
        (InvolvementStatus::Ended, Some(day(5, 1)))
    );
    assert_eq!(inv.end_reason.map(|r| r.code).as_deref(), Some("21"));
    // Stop corrected (2): new end date.
    h.put(
        "007.xml",
        &e307(
            "E2",
            day(5, 3),
            stopped(day(4, 30), "23", DeliveryStatus::Corrected),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(inv.end_date, Some(day(4, 30)));
    // The corrected stop's reason replaces the first one.
    assert_eq!(
        inv.end_reason,
        Some(EndReason {
            code: "23".into(),
            description: "Levering is in overeenstemming voortijdig beeindigd".into()
        })
    );
    // Stop withdrawn (3): active again, with the assignment's planned end.
    h.put(
        "008.xml",
        &e307(
            "E3",
            day(5, 4),
            stopped(day(4, 30), "23", DeliveryStatus::Withdrawn),
        ),
    );
    let inv = h.run_ok().only().clone();
    assert_eq!(
        (inv.status, inv.end_date, inv.end_reason.clone()),
        (InvolvementStatus::Active, Some(day(12, 31)), None)
    );
    // StatusAanlevering 9 changes nothing.
    h.put(
        "009.xml",
        &s305(
            "S5",
            day(5, 5),
            started(Some(1), day(1, 1), DeliveryStatus::Unchanged),
        ),
    );
    assert_eq!(h.run_ok().only(), &inv);
}

#[test]
fn a_start_without_assignment_number_matches_on_provider_client_product_and_date() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![
                assigned(1, "01", day(3, 1), None),
                assigned(2, "02", day(3, 1), None),
            ],
        ),
    );
    // Another client's assignment with the same product and date must not match.
    h.put(
        "002.xml",
        &a301(
            "T2",
            day(3, 1),
            OTHER_BSN,
            vec![assigned(3, "02", day(3, 1), None)],
        ),
    );
    h.run_ok();
    h.put(
        "003.xml",
        &s305(
            "S1",
            day(3, 6),
            started(None, day(3, 5), DeliveryStatus::First),
        ),
    );
    let out = h.run_ok();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    // Both assignments of this client at this provider are delivered; only 2 started.
    let status = |n: u64| out.records[&format!("{THUIS}-{n}")].status;
    assert_eq!(out.records.len(), 2, "{:?}", out.records.keys());
    assert_eq!(status(2), InvolvementStatus::Active);
    assert_eq!(status(1), InvolvementStatus::Planned);

    // A second assignment with the same product and date makes a start without number
    // ambiguous: quarantined, nothing changes.
    h.put(
        "004.xml",
        &a301(
            "T3",
            day(3, 2),
            BSN,
            vec![assigned(4, "02", day(3, 1), None)],
        ),
    );
    h.put(
        "005.xml",
        &s305(
            "S2",
            day(3, 7),
            started(None, day(3, 6), DeliveryStatus::Corrected),
        ),
    );
    let out = h.run_ok();
    assert_eq!(out.rejects.len(), 1, "{:?}", out.rejects);
    assert!(out.rejects[0].2.contains("ambiguous"), "{:?}", out.rejects);
    assert_eq!(out.rejects[0].0.as_deref(), Some("WMO305:98000001:S2#1"));
    // A start whose product matches nothing is quarantined too.
    let mut other = started(None, day(3, 6), DeliveryStatus::First);
    other.product = product("07");
    h.put("006.xml", &s305("S3", day(3, 8), other));
    let out = h.run_ok();
    // The client's assignments are delivered again, none started: since assignment 4 arrived
    // (dated before both starts), neither start without number can be matched.
    assert_eq!(out.records.len(), 3, "{:?}", out.records.keys());
    assert!(
        out.records
            .values()
            .all(|i| i.status == InvolvementStatus::Planned)
    );
    assert!(
        out.rejects[0].2.contains("no WMO301 assignment"),
        "{:?}",
        out.rejects
    );
    // No quarantine reason ever holds the BSN.
    assert!(out.rejects.iter().all(|r| !r.2.contains(BSN)));
}

#[test]
fn the_same_message_twice_changes_nothing() {
    let mut h = Harness::new();
    let assignment = a301(
        "T1",
        day(3, 1),
        BSN,
        vec![assigned(1, "02", day(3, 1), None)],
    );
    let start = s305(
        "S1",
        day(3, 6),
        started(Some(1), day(3, 5), DeliveryStatus::First),
    );
    h.put("001.xml", &assignment);
    h.put("002.xml", &start);
    let first = h.run_ok().only().clone();
    h.put("003.xml", &start);
    h.put("004.xml", &assignment);
    let again = h.run_ok();
    assert!(again.rejects.is_empty(), "{:?}", again.rejects);
    assert_eq!(again.only(), &first);
    assert_eq!(again.only().content_hash(), first.content_hash());
    // A full re-read gives the same too.
    let (full, _) = h.read(true).expect("run").expect("records");
    assert_eq!(full.only(), &first);
}

#[test]
fn out_of_order_files_are_applied_in_dagtekening_order() {
    let mut h = Harness::new();
    // File names sort stop, start, assignment; Dagtekening says assignment, start, stop.
    h.put(
        "a.xml",
        &e307(
            "E1",
            day(5, 2),
            stopped(day(5, 1), "19", DeliveryStatus::First),
        ),
    );
    h.put(
        "b.xml",
        &s305(
            "S1",
            day(3, 6),
            started(Some(1), day(3, 5), DeliveryStatus::First),
        ),
    );
    h.put(
        "c.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let inv = out.only();
    assert_eq!(inv.status, InvolvementStatus::Ended);
    assert_eq!((inv.start_date, inv.end_date), (day(3, 5), Some(day(5, 1))));
}

#[test]
fn a_start_that_arrives_before_its_assignment_takes_effect_when_the_assignment_arrives() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &s305(
            "S1",
            day(3, 6),
            started(Some(1), day(3, 5), DeliveryStatus::First),
        ),
    );
    let out = h.run_ok();
    assert!(out.records.is_empty());
    assert_eq!(out.rejects.len(), 1);
    assert!(
        out.rejects[0].2.contains("ToewijzingNummer 1"),
        "{:?}",
        out.rejects
    );
    // The assignment comes in a later file with an earlier Dagtekening.
    h.put(
        "002.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.only().status, InvolvementStatus::Active);
}

#[test]
fn a_message_of_another_iwmo_version_is_rejected_naming_the_version() {
    let mut h = Harness::new();
    let xml = message_xml(&a301(
        "T1",
        day(3, 1),
        BSN,
        vec![assigned(1, "02", day(3, 1), None)],
    ))
    .replace("iwmo/3_2/wmo301", "iwmo/3_1/wmo301")
    .replace("<BerichtSubversie>2<", "<BerichtSubversie>1<");
    h.put_raw("001.xml", &xml);
    h.put(
        "002.xml",
        &a301(
            "T2",
            day(3, 1),
            BSN,
            vec![assigned(2, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert_eq!(out.records.len(), 1, "the other message is still applied");
    assert_eq!(out.rejects.len(), 1, "{:?}", out.rejects);
    let reason = &out.rejects[0].2;
    assert!(
        reason.contains("iWmo version 3.1") && reason.contains("3.2"),
        "{reason}"
    );
    assert_eq!(out.rejects[0].0.as_deref(), Some("file:001.xml"));
}

#[test]
fn a_bsn_failing_the_elfproef_is_quarantined_and_never_applied() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BAD_BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert!(out.records.is_empty());
    assert_eq!(out.rejects.len(), 1, "{:?}", out.rejects);
    assert_eq!(out.rejects[0].1, "invalid_bsn");
    assert_eq!(out.rejects[0].0.as_deref(), Some("WMO301:0363:T1"));
    assert!(!out.rejects[0].2.contains(BAD_BSN));
    // The assignment does not exist: a start for it finds nothing.
    h.put(
        "002.xml",
        &s305(
            "S1",
            day(3, 6),
            started(Some(1), day(3, 5), DeliveryStatus::First),
        ),
    );
    let out = h.run_ok();
    assert!(out.records.is_empty());
    assert_eq!(out.rejects.len(), 1);
}

#[test]
fn an_assignment_number_reused_for_another_client_is_delivered_once_and_reported() {
    // Pairs are applied one by one: the number is noticed across pairs through the run's
    // work index, and the other client's assignment is reported, not delivered as well.
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    h.put(
        "002.xml",
        &a301(
            "T2",
            day(3, 2),
            OTHER_BSN,
            vec![assigned(1, "02", day(3, 2), None)],
        ),
    );
    let out = h.run_ok();
    assert_eq!(out.records.len(), 1, "{:?}", out.records.keys());
    assert!(out.records.contains_key(&format!("{THUIS}-1")));
    assert_eq!(out.rejects.len(), 1, "{:?}", out.rejects);
    let (id, code, reason) = &out.rejects[0];
    assert_eq!(code, "malformed");
    assert!(
        reason.contains("already used for another client"),
        "{reason}"
    );
    let id = id.as_deref().unwrap_or_default();
    assert!(id == "WMO301:0363:T1#1" || id == "WMO301:0363:T2#1", "{id}");
    assert!(!reason.contains(BSN) && !reason.contains(OTHER_BSN));
}

/// The client's index pseudonym under the test key (hex).
pub(super) fn person(bsn: &str) -> String {
    MasterKey::from_secret("k1", &[7u8; 32])
        .expect("key")
        .pseudonymiser(KeyPurpose::Index)
        .pseudonymise(&Bsn::parse(bsn).expect("bsn"))
        .to_hex()
}

/// The assignment of number 1 dated 1 March (`T1`, the earliest) or 2 March (`T9`).
pub(super) fn reuse_message(earliest: bool, bsn: &str) -> OutMessage {
    let (id, on) = if earliest {
        ("T1", day(3, 1))
    } else {
        ("T9", day(3, 2))
    };
    a301(id, on, bsn, vec![assigned(1, "02", on, None)])
}

/// The record id of the later assignment's product, reported as reusing the number.
pub(super) const REUSED_LATER: &str = "WMO301:0363:T9#1";

#[test]
fn a_reused_assignment_number_stays_with_the_client_of_the_earliest_message() {
    // Pairs are applied in the order of their pseudonyms (random here: a preview keys them
    // with a key of its own): the clients swap places, so that pair order cannot decide.
    for (early, late) in [(BSN, OTHER_BSN), (OTHER_BSN, BSN)] {
        let owner = |out: &Outcome| {
            out.records
                .get(&format!("{THUIS}-1"))
                .map(|i| i.person.to_hex())
        };
        let reported = |out: &Outcome| {
            for (_, _, reason) in &out.rejects {
                assert!(
                    reason.contains("already used for another client"),
                    "{reason}"
                );
                assert!(!reason.contains(BSN) && !reason.contains(OTHER_BSN));
            }
            out.rejects
                .iter()
                .map(|r| r.0.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };

        // Both in one run (the later one in the file named first).
        let mut h = Harness::new();
        h.put("001.xml", &reuse_message(false, late));
        h.put("002.xml", &reuse_message(true, early));
        let out = h.run_ok();
        assert_eq!(out.records.len(), 1, "{:?}", out.records.keys());
        assert_eq!(owner(&out), Some(person(early)));
        assert_eq!(reported(&out), [REUSED_LATER]);

        // The later one in a later run: reported, nothing delivered.
        let mut h = Harness::new();
        h.put("001.xml", &reuse_message(true, early));
        assert_eq!(owner(&h.run_ok()), Some(person(early)));
        h.put("002.xml", &reuse_message(false, late));
        let out = h.run_ok();
        assert!(out.records.is_empty(), "{:?}", out.records.keys());
        assert_eq!(reported(&out), [REUSED_LATER]);

        // The earlier one arrives late: it takes the number, and the assignment that had it
        // is reported.
        let mut h = Harness::new();
        h.put("001.xml", &reuse_message(false, late));
        let out = h.run_ok();
        assert_eq!(owner(&out), Some(person(late)));
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        h.put("002.xml", &reuse_message(true, early));
        let out = h.run_ok();
        assert_eq!(out.records.len(), 1, "{:?}", out.records.keys());
        assert_eq!(owner(&out), Some(person(early)));
        assert_eq!(reported(&out), [REUSED_LATER]);
        // A full run agrees.
        let (out, _) = h.read(true).expect("run").expect("something");
        assert_eq!(owner(&out), Some(person(early)));
        assert_eq!(reported(&out), [REUSED_LATER]);
    }
}

/// The record ids of a run's rejects, sorted; each must be a reused assignment number.
fn reused_ids(out: &Outcome) -> Vec<String> {
    let mut ids: Vec<String> = out
        .rejects
        .iter()
        .map(|(id, _, reason)| {
            assert!(
                reason.contains("already used for another client"),
                "{reason}"
            );
            id.clone().unwrap_or_default()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_late_message_and_a_new_assignment_of_the_dispossessed_client_report_each_product_once() {
    for (early, late) in [(BSN, OTHER_BSN), (OTHER_BSN, BSN)] {
        // Number 1 is the later client's (T9) until the earlier client's message arrives
        // late; the later client's new WMO301 in the same run (T10) cannot take it either.
        let mut h = Harness::new();
        h.put("001.xml", &reuse_message(false, late));
        h.run_ok();
        h.put("002.xml", &reuse_message(true, early));
        h.put(
            "003.xml",
            &a301(
                "T10",
                day(3, 3),
                late,
                vec![assigned(1, "02", day(3, 3), None)],
            ),
        );
        let out = h.run_ok();
        assert_eq!(reused_ids(&out), ["WMO301:0363:T10#1", REUSED_LATER]);

        // The later client's assignment sent again (the same message in a new file).
        let mut h = Harness::new();
        h.put("001.xml", &reuse_message(false, late));
        h.run_ok();
        h.put("002.xml", &reuse_message(true, early));
        h.put("003.xml", &reuse_message(false, late));
        let out = h.run_ok();
        assert_eq!(reused_ids(&out), [REUSED_LATER]);
        // A full run reads both copies as new: one entry all the same.
        let (out, _) = h.read(true).expect("run").expect("something");
        assert_eq!(reused_ids(&out), [REUSED_LATER]);
    }
}

#[test]
fn a_message_sent_twice_in_one_run_is_quarantined_once() {
    // A start without assignment, in two files.
    let mut h = Harness::new();
    let start = s305(
        "S1",
        day(3, 6),
        started(Some(7), day(3, 5), DeliveryStatus::First),
    );
    h.put("001.xml", &start);
    h.put("002.xml", &start);
    let out = h.run_ok();
    let ids: Vec<_> = out.rejects.iter().map(|r| r.0.clone()).collect();
    assert_eq!(
        ids,
        [Some("WMO305:98000001:S1#1".to_owned())],
        "{:?}",
        out.rejects
    );
}

#[test]
fn shelter_categories_are_sensitive() {
    let mut h = Harness::new();
    let opvang = msg(
        MessageKind::Wmo301,
        "T1",
        day(3, 1),
        OPVANG,
        BSN,
        Body::Assignment(vec![
            assigned(1, "16", day(3, 1), None),
            assigned(2, "17", day(3, 1), None),
            assigned(3, "15", day(3, 1), None),
        ]),
    );
    h.put("001.xml", &opvang);
    let out = h.run_ok();
    let sensitive: Vec<bool> = out.records.values().map(|i| i.sensitive).collect();
    assert_eq!(sensitive, vec![true, true, false]);
    assert!(
        out.records
            .values()
            .all(|i| i.organisation_code == "WMO-NACHTOPVANG")
    );
    assert!(
        out.records
            .values()
            .all(|i| i.life_domain == LifeDomain::Housing)
    );
}

#[test]
fn a_truncated_or_malformed_file_fails_the_run() {
    let mut h = Harness::new();
    let xml = message_xml(&a301(
        "T1",
        day(3, 1),
        BSN,
        vec![assigned(1, "02", day(3, 1), None)],
    ));
    h.put_raw("001.xml", &xml[..xml.len() - 20]);
    let err = h.run().expect_err("truncated");
    assert!(
        err.contains("truncated") && err.contains("001.xml"),
        "{err}"
    );
    assert!(h.cursor.is_none());
    h.put_raw("001.xml", "<?xml version=\"1.0\"?><!DOCTYPE x><Bericht/>");
    assert!(h.run().expect_err("doctype").contains("DOCTYPE"));
}

#[test]
fn a_url_location_is_refused_with_a_clear_message() {
    let mut h = Harness::new();
    h.source.location = "https://example.invalid/berichten".into();
    let err = h.run().expect_err("url");
    assert!(err.contains("folder"), "{err}");
}

/// The whole pipeline (reader thread, mapping, SQLite store, cursor) over a generated archive.
#[tokio::test]
async fn a_generated_archive_syncs_incrementally_through_the_pipeline() {
    use crate::store::{QuarantineFilter, RunStatus, Store};
    use crate::sync::{Progress, SyncContext, sync_source};

    let h = Harness::new();
    let summary = crate::generate::iwmo::write_lifecycles(h.dir.path(), 120, 11, day(1, 5))
        .expect("generate");
    let db = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite://{}", db.path().join("m.db").display()))
        .await
        .expect("store");
    let ctx = SyncContext {
        store: store.clone(),
        key: Arc::new(MasterKey::from_secret("k1", &[7u8; 32]).expect("key")),
        registry: Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry")),
        max_end_share: 0.1,
        quarantine_raw_days: 30,
        batch_size: 50,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let progress = || Arc::new(Progress::default());
    let first = sync_source(&ctx, &h.source, false, progress())
        .await
        .expect("sync");
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(
        first.counts.rejected, 0,
        "generated messages are all acceptable"
    );
    assert_eq!(first.counts.inserted, summary.assignments);
    let stored = store.involvements("wmo").await.expect("involvements");
    assert_eq!(stored.len() as u64, summary.assignments);
    for status in ["planned", "active", "ended"] {
        assert!(
            stored.iter().any(|s| s.status == status),
            "no {status} involvement"
        );
    }
    // Nothing new: a quiet night, nothing read.
    let quiet = sync_source(&ctx, &h.source, false, progress())
        .await
        .expect("sync");
    assert_eq!((quiet.status, quiet.counts.read), (RunStatus::Succeeded, 0));
    // A stop arrives for a running assignment: one involvement updated, nothing else read.
    let running = stored
        .iter()
        .find(|s| s.status == "active" && s.source_record_id.ends_with("-100001"))
        .expect("assignment 100001 is running");
    let provider = running
        .source_record_id
        .split('-')
        .next()
        .expect("agb")
        .to_owned();
    // The stop carries the assignment's client: take it from the generated 301.
    let bsn = std::fs::read_dir(h.dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("wmo301.xml"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|x| x.contains("<ToewijzingNummer>100001<"))
        .and_then(|x| x.split("<Bsn>").nth(1).map(|r| r[..9].to_owned()))
        .expect("the 301 of assignment 100001");
    let stop = OutMessage {
        header: header(MessageKind::Wmo307, &provider, "LATE-1", day(12, 1)),
        client: client(&bsn),
        body: Body::Stop(vec![StoppedProduct {
            number: Some(100_001),
            product: None,
            assignment_start: None,
            start: day(1, 1),
            reason: "38".into(),
            end: day(11, 30),
            status: DeliveryStatus::First,
        }]),
        every_optional: false,
    };
    h.put("99999999-late-wmo307.xml", &stop);
    let late = sync_source(&ctx, &h.source, false, progress())
        .await
        .expect("sync");
    assert_eq!(late.status, RunStatus::Succeeded, "{:?}", late.error);
    assert_eq!((late.counts.read, late.counts.updated), (1, 1));
    let after = store.involvements("wmo").await.expect("involvements");
    let ended = after
        .iter()
        .find(|s| s.source_record_id == running.source_record_id)
        .expect("still there");
    assert_eq!(ended.status, "ended");
    assert_eq!(ended.end_date.as_deref(), Some("2026-11-30"));
    let q = store
        .quarantine(&QuarantineFilter {
            source: Some("wmo".into()),
            run: None,
            include_resolved: true,
            limit: 100,
        })
        .await
        .expect("quarantine");
    assert!(q.is_empty(), "{q:?}");

    // No clear BSN or client surname of any message reaches the database (or its WAL).
    let mut secrets: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).expect("list") {
        let xml = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for tag in ["<Bsn>", "<iwmo:Achternaam>"] {
            for part in xml.split(tag).skip(1) {
                if let Some(v) = part.split('<').next() {
                    secrets.push(v.to_owned());
                }
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() > 100, "{} secrets", secrets.len());
    drop(ctx);
    drop(store);
    for name in ["m.db", "m.db-wal"] {
        let Ok(bytes) = std::fs::read(db.path().join(name)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name} holds a clear BSN or surname"
            );
        }
    }
}

#[test]
fn a_cancelled_run_fails_without_delivering_anything() {
    let h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let cx = OpenContext {
        source: &h.source,
        cursor: None,
        full: false,
        cancel: Arc::new(AtomicBool::new(true)),
        state: None,
    };
    let mut stream = open(&cx).expect("open").expect("new files").stream;
    let err = stream.next_record().expect_err("cancelled").to_string();
    assert!(err.contains("cancelled"), "{err}");
    assert!(stream.cursor().is_none());
}

/// One generated message: (Dagtekening day, kind 0..6, assignment number, client, date day).
pub(super) type Op = (u32, u8, u64, bool, u32);

/// [`op_message`] with the same assignment numbers for both clients (a data error), and the
/// clients swapped when `swap` (so that either pair key comes first).
pub(super) fn shared_op_message(i: usize, op: Op, swap: bool) -> OutMessage {
    let mut m = op_message(i, op);
    match &mut m.body {
        Body::Assignment(p) => p.iter_mut().for_each(|a| a.number %= 10),
        Body::Start(p) => p
            .iter_mut()
            .for_each(|a| a.number = a.number.map(|n| n % 10)),
        Body::Stop(p) => p
            .iter_mut()
            .for_each(|a| a.number = a.number.map(|n| n % 10)),
    }
    if swap {
        m.client = client(if m.client.bsn == BSN { OTHER_BSN } else { BSN });
    }
    m
}

pub(super) fn op_message(i: usize, (on, kind, number, other, d): Op) -> OutMessage {
    let bsn = if other { OTHER_BSN } else { BSN };
    // Assignment numbers are the municipality's: never shared between clients.
    let number = if other { number + 10 } else { number };
    let on = day(4, on);
    let date = day(5, d);
    let status = [
        DeliveryStatus::First,
        DeliveryStatus::Corrected,
        DeliveryStatus::Withdrawn,
    ][usize::from(kind % 3)];
    let id = i.to_string();
    let m = |k, body| msg(k, &id, on, THUIS, bsn, body);
    match kind {
        0 => m(
            MessageKind::Wmo301,
            Body::Assignment(vec![assigned(number, "02", day(3, 1), None)]),
        ),
        1 => m(
            MessageKind::Wmo301,
            Body::Assignment(vec![assigned(number, "02", day(3, 1), Some("13"))]),
        ),
        2..=4 => m(
            MessageKind::Wmo305,
            Body::Start(vec![StartedProduct {
                number: (number % 10 == 1).then_some(number),
                ..started(None, date, status)
            }]),
        ),
        _ => m(
            MessageKind::Wmo307,
            Body::Stop(vec![StoppedProduct {
                number: Some(number),
                end: date,
                ..stopped(date, "19", status)
            }]),
        ),
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            (1u32..=28, 0u8..7, 1u64..=2, any::<bool>(), 1u32..=28),
            1..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The outcome depends on the messages only, not on file names, file order or
        /// duplicates: messages are applied by Dagtekening and identification, idempotently.
        #[test]
        fn file_order_and_duplicates_do_not_change_the_outcome(
            ops in ops(),
            order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let messages: Vec<OutMessage> =
                ops.iter().enumerate().map(|(i, op)| op_message(i, *op)).collect();
            let a = Harness::new();
            for (i, m) in messages.iter().enumerate() {
                a.put_unchecked(&format!("{i:04}.xml"), m);
            }
            let b = Harness::new();
            // A different file order: names from a seeded permutation.
            let mut names: Vec<u64> = (0..messages.len() as u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ order).rotate_left(17))
                .collect();
            names.dedup();
            for (i, m) in messages.iter().enumerate() {
                b.put_unchecked(&format!("{:020}-{i}.xml", names[i % names.len()]), m);
            }
            for (n, d) in dups.iter().enumerate() {
                let i = d.index(messages.len());
                b.put_unchecked(&format!("dup-{n}-{i}.xml"), &messages[i]);
            }
            let (out_a, _) = a.read(true).expect("run").expect("records");
            let (out_b, _) = b.read(true).expect("run").expect("records");
            prop_assert_eq!(&out_a.records, &out_b.records);
        }

        /// An incremental run delivers what a full run over the same files delivers, for
        /// every assignment it delivers; and it delivers every assignment a new message
        /// touched.
        #[test]
        fn an_incremental_run_agrees_with_a_full_run(ops in ops(), split in any::<prop::sample::Index>()) {
            let messages: Vec<OutMessage> =
                ops.iter().enumerate().map(|(i, op)| op_message(i, *op)).collect();
            let split = split.index(messages.len() + 1);
            let mut h = Harness::new();
            for (i, m) in messages.iter().enumerate().take(split) {
                h.put_unchecked(&format!("{i:04}.xml"), m);
            }
            if split > 0 {
                h.run().expect("first run");
            }
            for (i, m) in messages.iter().enumerate().skip(split) {
                h.put_unchecked(&format!("{i:04}.xml"), m);
            }
            let incremental = h.run().expect("second run");
            let (full, _) = h.read(true).expect("full").expect("records");
            let Some(incremental) = incremental else {
                prop_assert_eq!(split, messages.len());
                return Ok(());
            };
            for (id, inv) in &incremental.records {
                prop_assert_eq!(Some(inv), full.records.get(id));
            }
            // Assignments whose WMO301 is new are delivered.
            for m in messages.iter().skip(split) {
                if let Body::Assignment(p) = &m.body {
                    for a in p {
                        let id = format!("{THUIS}-{}", a.number);
                        prop_assert!(incremental.records.contains_key(&id) || !full.records.contains_key(&id));
                    }
                }
            }
        }

        /// With assignment numbers used for both clients (a data error), a full run and an
        /// incremental run agree on who has each number and what is delivered for it, for
        /// either order of the clients' pair keys (the BSNs swap).
        #[test]
        fn shared_numbers_go_to_the_same_client_on_incremental_and_full_runs(
            ops in ops(),
            split in any::<prop::sample::Index>(),
            swap in any::<bool>(),
        ) {
            let messages: Vec<OutMessage> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| shared_op_message(i, *op, swap))
                .collect();
            let split = split.index(messages.len() + 1);
            let mut h = Harness::new();
            for (i, m) in messages.iter().enumerate().take(split) {
                h.put_unchecked(&format!("{i:04}.xml"), m);
            }
            if split > 0 {
                h.run().expect("first run");
            }
            for (i, m) in messages.iter().enumerate().skip(split) {
                h.put_unchecked(&format!("{i:04}.xml"), m);
            }
            let incremental = h.run().expect("second run");
            let (full, _) = h.read(true).expect("full").expect("records");
            let Some(incremental) = incremental else {
                prop_assert_eq!(split, messages.len());
                return Ok(());
            };
            for (id, inv) in &incremental.records {
                prop_assert_eq!(Some(inv), full.records.get(id));
            }
        }
    }
}

#[test]
fn a_late_assignment_that_makes_an_older_start_ambiguous_redelivers_the_other_assignment() {
    let mut h = Harness::new();
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    h.put(
        "002.xml",
        &s305(
            "S1",
            day(3, 6),
            started(None, day(3, 5), DeliveryStatus::First),
        ),
    );
    assert_eq!(h.run_ok().only().status, InvolvementStatus::Active);
    // A second assignment of the same product and date, dated before the start: the start
    // without number is now ambiguous, so assignment 1 is no longer started.
    h.put(
        "003.xml",
        &a301(
            "T2",
            day(3, 2),
            BSN,
            vec![assigned(2, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert_eq!(out.records.len(), 2, "{:?}", out.records.keys());
    assert!(
        out.records
            .values()
            .all(|i| i.status == InvolvementStatus::Planned)
    );
}

#[test]
fn an_empty_folder_is_a_quiet_night_and_an_oversized_file_fails_the_run() {
    let mut h = Harness::new();
    assert!(h.run().expect("quiet").is_none());
    assert!(
        h.read(true)
            .expect_err("full run of nothing")
            .contains("no .xml")
    );
    h.source.limits.max_record_bytes = 600;
    h.put(
        "001.xml",
        &a301(
            "T1",
            day(3, 1),
            BSN,
            vec![assigned(1, "02", day(3, 1), None)],
        ),
    );
    let err = h.run().expect_err("too big");
    assert!(err.contains("limits.max_record_bytes"), "{err}");
    assert!(h.cursor.is_none());
}

#[test]
fn messages_of_another_municipality_are_quarantined_when_one_is_configured() {
    let mut h = Harness::new();
    h.source.iwmo = Some(crate::config::IwmoSettings {
        municipality: Some("0363".into()),
    });
    let mut elsewhere = a301(
        "T1",
        day(3, 1),
        BSN,
        vec![assigned(1, "02", day(3, 1), None)],
    );
    elsewhere.header.sender = "0344".into();
    h.put("001.xml", &elsewhere);
    h.put(
        "002.xml",
        &a301(
            "T2",
            day(3, 1),
            BSN,
            vec![assigned(2, "02", day(3, 1), None)],
        ),
    );
    let out = h.run_ok();
    assert_eq!(out.only().source_record_id, format!("{THUIS}-2"));
    assert_eq!(out.rejects.len(), 1, "{:?}", out.rejects);
    assert!(
        out.rejects[0].2.contains("municipality 0344"),
        "{:?}",
        out.rejects
    );
}

#[test]
fn the_iwmo_table_is_checked() {
    let text = r#"
[[source]]
name = "wmo"
kind = "iwmo"
location = "x"
mode = "incremental"
schedule = "0 0 * * * *"
mapping = "mappings/wmo.toml"
[source.iwmo]
municipality = "Amsterdam"
"#;
    let err = Config::parse(text, "m.toml", &deploy())
        .expect_err("invalid")
        .to_string();
    assert!(err.contains("iwmo.municipality"), "{err}");
    let bad_key = text.replace("municipality = \"Amsterdam\"", "gemeente = \"0363\"");
    assert!(Config::parse(&bad_key, "m.toml", &deploy()).is_err());
}

#[test]
fn the_mappings_end_reasons_are_the_official_wmo588_list() {
    let csv = std::fs::read_to_string(
        deploy().join("../schemas/formats/iwmo-3.2/WMO588-reden-beeindiging.csv"),
    )
    .expect("WMO588 code list");
    let official: BTreeMap<String, String> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (code, text) = l.split_once(',').expect("code,omschrijving");
            (code.to_owned(), text.trim().to_owned())
        })
        .collect();
    assert_eq!(official.len(), 11);
    let h = Harness::new();
    let spec = h.source.mapping_spec.clone().expect("mapping");
    assert_eq!(spec.end_reasons, official);
    let table: BTreeMap<String, String> = END_REASONS
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(table, official);
}
