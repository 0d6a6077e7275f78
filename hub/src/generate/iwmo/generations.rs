//! Later nights of the WMO module's messages, for `matchpoint sandbox`'s
//! `POST /_sandbox/advance`: generation `g` (≥ 1) is the set of iWmo messages the providers
//! and the municipality exchanged on that day, after everything
//! [`super::write_for_population`] wrote (generation 0).
//!
//! - **New** assignments: adults of the population who are no WMO client yet become one in a
//!   generation drawn per person (WMO301).
//! - **Changed** assignments: a running assignment is extended by half a year (a WMO301 with
//!   the same `ToewijzingNummer` and `RedenWijziging` 04, *verlenging*).
//! - **Started**: an assignment whose support has not started gets its WMO305.
//! - **Ended**: running support stops (WMO307 with a WMO588 reason).
//!
//! Every decision is drawn from the seed, the assignment and the generation, and replayed
//! for the generations before `g`, so generation `g` is the same whenever it is written. Dates
//! follow the generation's day ([`generation_day`]), after every message of generation 0, so
//! the file names (`YYYYMMDD-…`) sort after every earlier delivery.

use chrono::{Days, NaiveDate};
use matchpoint_connectors::iwmo::{
    AssignedProduct, Body, DeliveryStatus, Extent, MessageKind, Product, StartedProduct,
    StoppedProduct,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Lifecycle, OutClient, OutMessage, PREFIXES, PROVIDERS, SURNAMES, header, lifecycle};
use crate::generate::{GenerateError, GenerateOptions};

/// Days from the first day of generation 0 to the day of generation 1 (generation 0 spans
/// about 110 days).
const FIRST_GENERATION_OFFSET: u64 = 180;

/// The day of generation `g`'s messages.
pub fn generation_day(first_day: NaiveDate, g: u32) -> NaiveDate {
    first_day
        .checked_add_days(Days::new(FIRST_GENERATION_OFFSET + u64::from(g)))
        .unwrap_or(first_day)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Calls `f(adult number, BSN, birth date)` for every adult of the population of `opts`, in
/// the order and with the numbers [`super::write_for_population`] uses.
fn each_adult(
    opts: &GenerateOptions,
    f: &mut dyn FnMut(u64, String, NaiveDate),
) -> Result<(), GenerateError> {
    let catalogue = crate::generate::Catalogue::build(
        crate::generate::ORGANISATIONS_TOML,
        &mut ChaCha8Rng::seed_from_u64(opts.seed ^ crate::generate::STAFF_SALT),
    )
    .map_err(GenerateError::Registry)?;
    let today = crate::generate::export_date(opts.seed);
    let mut population = crate::generate::Population::new(
        opts.seed,
        opts.persons,
        opts.bad_share,
        today,
        &catalogue,
    );
    let mut adults = 0u64;
    while let Some(household) = population.next_household().ok().flatten() {
        let mut numbered = Vec::new();
        for person in household.persons.iter().filter(|p| p.adult).rev() {
            adults += 1;
            numbered.push((adults, format!("{:09}", person.bsn), person.birth));
        }
        for (n, bsn, birth) in numbered.into_iter().rev() {
            f(n, bsn, birth);
        }
    }
    Ok(())
}

/// An assignment as later generations see it.
struct Tracked {
    /// Message id prefix: `G` for clients of generation 0, `H` for later ones.
    tag: char,
    /// Key in message ids.
    key: u64,
    client: OutClient,
    provider: &'static str,
    assignment: AssignedProduct,
    started: Option<NaiveDate>,
    stopped: bool,
    voided: bool,
    full: bool,
}

impl Tracked {
    fn from_lifecycle(i: u64, client: OutClient, l: Lifecycle) -> Tracked {
        Tracked {
            tag: 'G',
            key: i,
            client,
            provider: l.provider,
            assignment: l.assignment,
            started: l.started,
            stopped: l.stopped,
            voided: l.voided,
            full: l.full,
        }
    }

    fn message(&self, g: u32, letter: char, day: NaiveDate, body: Body) -> OutMessage {
        let mut id = format!("{}{g}{letter}{}", self.tag, self.key);
        id.truncate(12);
        let kind = match body {
            Body::Assignment(_) => MessageKind::Wmo301,
            Body::Start(_) => MessageKind::Wmo305,
            Body::Stop(_) => MessageKind::Wmo307,
        };
        OutMessage {
            header: header(kind, self.provider, &id, day),
            client: self.client.clone(),
            body,
            every_optional: self.full,
        }
    }

    /// Applies generation `k`'s decision; returns its message when `emit`.
    fn step(&mut self, seed: u64, k: u32, day: NaiveDate, emit: bool) -> Option<OutMessage> {
        if self.voided || self.stopped {
            return None;
        }
        let draw = mix(seed ^ (self.key << 8) ^ u64::from(self.tag) ^ (u64::from(k) << 40)) % 1000;
        let before = day.pred_opt().unwrap_or(day);
        let product = self.assignment.product.clone();
        match self.started {
            None if draw < 150 => {
                self.started = Some(day);
                emit.then(|| {
                    let p = StartedProduct {
                        number: Some(self.assignment.number),
                        product,
                        assignment_start: Some(self.assignment.start),
                        start: day,
                        status: DeliveryStatus::First,
                    };
                    self.message(k, 'S', day, Body::Start(vec![p]))
                })
            }
            Some(start) if draw < 25 => {
                self.stopped = true;
                emit.then(|| {
                    let p = StoppedProduct {
                        number: Some(self.assignment.number),
                        product,
                        assignment_start: Some(self.assignment.start),
                        start,
                        reason: ["19", "21", "23", "31", "38"][(draw % 5) as usize].into(),
                        end: before.max(start),
                        status: DeliveryStatus::First,
                    };
                    self.message(k, 'E', day, Body::Stop(vec![p]))
                })
            }
            Some(_) if draw < 60 => {
                let end = self.assignment.end.unwrap_or(day);
                self.assignment.end = end.checked_add_days(Days::new(182)).or(Some(end));
                self.assignment.change_reason = Some("04".into());
                self.assignment.assigned_on = day;
                emit.then(|| {
                    let a = self.assignment.clone();
                    self.message(k, 'W', day, Body::Assignment(vec![a]))
                })
            }
            _ => None,
        }
    }
}

/// A newcomer: adult `n` (no client of generation 0) becomes a WMO client in this
/// generation, or never (`None`).
fn newcomer_generation(seed: u64, n: u64) -> Option<u32> {
    let h = mix(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x4E45_5743); // "NEWC"
    (h % 100 < 25).then(|| 1 + ((h >> 8) % 10) as u32)
}

fn newcomer(seed: u64, n: u64, bsn: String, birth: NaiveDate, day: NaiveDate) -> Tracked {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9) ^ 0x4E57);
    let provider = PROVIDERS[rng.random_range(0..PROVIDERS.len())];
    let category = format!("{:02}", rng.random_range(1..=18u32));
    let client = OutClient {
        bsn,
        birth,
        birth_use: None,
        gender: rng.random_range(0..3u32).to_string(),
        surname: SURNAMES[rng.random_range(0..SURNAMES.len())].to_owned(),
        prefix: PREFIXES[rng.random_range(0..PREFIXES.len())].map(str::to_owned),
        initials: "CD".into(),
    };
    let code = format!("{category}A{:02}", rng.random_range(1..100u32));
    let assignment = AssignedProduct {
        number: 5_000_000 + n,
        provider_reference: None,
        product: Some(Product {
            category,
            code: Some(code),
        }),
        assigned_on: day,
        assigned_at: "10:00:00".into(),
        start: day,
        end: day.checked_add_days(Days::new(365)),
        change_reason: None,
        extent: Some(Extent {
            volume: rng.random_range(1..10),
            unit: "04".into(),
            frequency: "2".into(),
        }),
        budget: None,
    };
    Tracked {
        tag: 'H',
        key: n,
        client,
        provider,
        assignment,
        started: None,
        stopped: false,
        voided: false,
        full: false,
    }
}

/// What generation `g` changed, by kind of change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerationCounts {
    /// New assignments (WMO301).
    pub new: u64,
    /// Extended assignments (WMO301 with `RedenWijziging`).
    pub changed: u64,
    /// Started support (WMO305).
    pub started: u64,
    /// Stopped support (WMO307).
    pub ended: u64,
}

/// The messages of generation `g` (≥ 1) for the population of `opts` whose every `every`-th
/// adult became a WMO client in generation 0 (as [`super::write_for_population`] with the
/// same `first_day` wrote), in delivery order, with counts by kind.
pub fn generation_messages(
    opts: &GenerateOptions,
    every: u64,
    first_day: NaiveDate,
    g: u32,
) -> Result<(Vec<OutMessage>, GenerationCounts), GenerateError> {
    let every = every.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x4957_4D4F); // as generation 0
    let mut clients = 0u64;
    let mut out = Vec::new();
    let mut counts = GenerationCounts::default();
    let seed = opts.seed;
    each_adult(opts, &mut |n, bsn, birth| {
        let (mut tracked, from) = if n.is_multiple_of(every) {
            let i = clients;
            clients += 1;
            let l = lifecycle(i, bsn.clone(), birth, &mut rng, first_day);
            let client = l.messages.first().map(|m| m.client.clone());
            let Some(client) = client else {
                return;
            };
            (Tracked::from_lifecycle(i, client, l), 1)
        } else {
            let Some(born) = newcomer_generation(seed, n).filter(|b| *b <= g) else {
                return;
            };
            let day = generation_day(first_day, born);
            let t = newcomer(seed, n, bsn, birth, day);
            if born == g {
                counts.new += 1;
                let a = t.assignment.clone();
                out.push(t.message(g, 'T', day, Body::Assignment(vec![a])));
                return;
            }
            (t, born + 1)
        };
        for k in from..=g {
            let was_started = tracked.started.is_some();
            let m = tracked.step(seed, k, generation_day(first_day, k), k == g);
            if let Some(m) = m {
                match &m.body {
                    Body::Assignment(_) => counts.changed += 1,
                    Body::Start(_) if !was_started => counts.started += 1,
                    Body::Start(_) => {}
                    Body::Stop(_) => counts.ended += 1,
                }
                out.push(m);
            }
        }
    })?;
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::iwmo::file_name;

    fn options(dir: &std::path::Path) -> GenerateOptions {
        GenerateOptions {
            persons: 800,
            out: dir.to_path_buf(),
            seed: 3,
            bad_share: 0.0,
        }
    }

    #[test]
    fn generations_are_repeatable_dated_after_generation_0_and_change_each_assignment_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = options(dir.path());
        let first = NaiveDate::from_ymd_opt(2026, 1, 5).expect("date");
        let g0 = super::super::write_for_population(dir.path(), &opts, 5, first).expect("g0");
        let last_g0 = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .max()
            .expect("files");
        let mut totals = GenerationCounts::default();
        for g in 1..=4 {
            let (messages, counts) = generation_messages(&opts, 5, first, g).expect("messages");
            let (again, _) = generation_messages(&opts, 5, first, g).expect("again");
            assert_eq!(
                messages.iter().map(message_xml_of).collect::<Vec<_>>(),
                again.iter().map(message_xml_of).collect::<Vec<_>>(),
                "generation {g} is the same whenever it is written"
            );
            assert_eq!(
                (counts.new + counts.changed + counts.started + counts.ended) as usize,
                messages.len()
            );
            let mut seen = std::collections::HashSet::new();
            for (seq, m) in (1u64..).zip(&messages) {
                assert_eq!(m.header.dagtekening, generation_day(first, g));
                assert!(
                    file_name(&m.header, seq) > last_g0,
                    "sorts after generation 0"
                );
                assert!(m.header.id.len() <= 12, "{}", m.header.id);
                let number = match &m.body {
                    Body::Assignment(p) => p[0].number,
                    Body::Start(p) => p[0].number.unwrap_or(0),
                    Body::Stop(p) => p[0].number.unwrap_or(0),
                };
                assert!(seen.insert(number), "one message per assignment and night");
            }
            totals.new += counts.new;
            totals.changed += counts.changed;
            totals.started += counts.started;
            totals.ended += counts.ended;
        }
        assert!(g0.messages > 0);
        assert!(
            totals.new > 0 && totals.changed > 0 && totals.started > 0 && totals.ended > 0,
            "{totals:?}"
        );
    }

    fn message_xml_of(m: &OutMessage) -> String {
        super::super::message_xml(m)
    }
}
