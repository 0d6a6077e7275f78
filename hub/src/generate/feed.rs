//! Source feeds for the simulated upstream systems (`matchpoint sandbox`): the same seeded
//! population as `generate`, each source with its own seeded subset of households, its own
//! record ids, and records that change from one generation to the next.
//!
//! A feed is a list of [`FeedRecord`]s in a source-neutral form; each simulated upstream
//! renders them in its own format (REST/JSON, SOAP, …) with its own codes. Organisations are
//! given by the source's own code (its `source_codes` in `deploy/organisations.toml`: every
//! simulated source has its own list, as a real supplier would), which its mapping resolves
//! through the registry; an organisation the source has no code for is given by its registry
//! code, which every source may deliver.
//!
//! Generations: at generation 0 most records exist; each later generation (`advance`) adds
//! the records held back for it, changes a few (a revised goal) and ends a few (status ended,
//! end date that day). A record's `updated_at` is the time of the last generation that
//! touched it, so an incremental sync (`updated_since`) sees exactly what changed.

use chrono::{Days, NaiveDate};
use matchpoint_schemas::Registry;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::ORGANISATIONS_TOML;
use super::catalogue::{Catalogue, area_team};
use super::population::{Population, Status, Team};

/// Salt of the staff roster's random stream (the same as `generate`, so the same
/// professionals appear).
const STAFF_SALT: u64 = 0x5354_4146_465F_5253;

/// One involvement of a feed, before a format renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRecord {
    /// The record id in the source, e.g. `OKC1-00000012`.
    pub id: String,
    /// The client's BSN, nine digits.
    pub bsn: String,
    /// The client's name (synthetic).
    pub name: String,
    /// Birth date.
    pub birth: NaiveDate,
    /// Registry code of the organisation.
    pub org: String,
    /// Team.
    pub team: String,
    /// Life domain as okc-2 codes it (`JGZ`, `OPV`, …); formats recode it.
    pub domain: &'static str,
    /// Goal of the support.
    pub goal: String,
    /// Contact person: name, role, phone, e-mail.
    pub contact: Option<(String, String, String, String)>,
    /// Start date.
    pub start: NaiveDate,
    /// End date.
    pub end: Option<NaiveDate>,
    /// Status: `planned`, `active` or `ended`.
    pub status: &'static str,
    /// Whether the organisation coordinates the household's support.
    pub coordinator: bool,
    /// Relations: the other person's BSN and `parent`, `child` or `household_member`.
    pub relations: Vec<(String, &'static str)>,
    /// The generation the record first appears in.
    pub born: u32,
    /// The generation that last touched it (set by [`Feed::at`]).
    pub touched: u32,
}

/// What happens to a record in one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    None,
    Revised,
    Ended,
}

/// A source's feed: its records at generation 0 and the rules of later generations.
#[derive(Debug, Clone)]
pub struct Feed {
    seed: u64,
    salt: u64,
    today: NaiveDate,
    records: Vec<FeedRecord>,
}

/// The code `source` knows the organisation by whose okc-2 code is `okc2_code`: the source's
/// first own code, else the registry code (else the okc-2 code).
fn own_code(registry: &Registry, source: &str, okc2_code: &str) -> String {
    match registry.resolve(super::catalogue::SOURCE, okc2_code) {
        Some(o) => o
            .source_codes
            .get(source)
            .and_then(|codes| codes.first())
            .unwrap_or(&o.code)
            .clone(),
        None => okc2_code.to_owned(),
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn salt_of(source: &str) -> u64 {
    source.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

impl Feed {
    /// The feed of `source` (record ids `prefix` + 8 digits): the households of the
    /// population of `persons` with `seed` that this source knows (`share` of them, drawn
    /// per source), with every involvement of their members.
    pub fn build(
        source: &str,
        prefix: &str,
        persons: u64,
        seed: u64,
        share: f64,
    ) -> Result<Feed, String> {
        let catalogue = Catalogue::build(
            ORGANISATIONS_TOML,
            &mut ChaCha8Rng::seed_from_u64(seed ^ STAFF_SALT),
        )?;
        let registry = Registry::parse(ORGANISATIONS_TOML, "deploy/organisations.toml")
            .map_err(|e| e.to_string())?;
        let base = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default();
        let today = base.checked_add_days(Days::new(seed % 28)).unwrap_or(base);
        let salt = salt_of(source);
        let mut population = Population::new(seed, persons, 0.0, today, &catalogue);
        let mut records = Vec::new();
        let mut household = 0u64;
        let mut number = 0u64;
        while let Some(h) = population
            .next_household()
            .map_err(|_| format!("the BSN space cannot hold {persons} persons"))?
        {
            household += 1;
            let draw = mix(seed ^ salt ^ household.wrapping_mul(0x2545_F491_4F6C_DD1D));
            if (draw % 10_000) as f64 >= share * 10_000.0 {
                continue;
            }
            for r in &h.records {
                let Some(person) = h.persons.get(r.person) else {
                    continue;
                };
                let Some(org) = catalogue.orgs.get(r.org) else {
                    continue;
                };
                let org_code = own_code(&registry, source, &org.source_code);
                number += 1;
                let relations = h
                    .persons
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != r.person)
                    .filter_map(|(_, other)| {
                        let kind = match (person.adult, other.adult) {
                            (false, true) => "parent",
                            (true, false) => "child",
                            (true, true) => "household_member",
                            (false, false) => return None,
                        };
                        Some((format!("{:09}", other.bsn), kind))
                    })
                    .collect();
                // One record in twenty is held back for a later generation (1 to 3).
                let held = mix(seed ^ salt ^ number.wrapping_mul(0x9E37_79B9));
                let born = if held.is_multiple_of(20) {
                    1 + (held >> 8) as u32 % 3
                } else {
                    0
                };
                records.push(FeedRecord {
                    id: format!("{prefix}{number:08}"),
                    bsn: format!("{:09}", person.bsn),
                    name: format!("{} {}", person.first_name, person.surname),
                    birth: person.birth,
                    org: org_code,
                    team: match r.team {
                        Team::Area => area_team(h.area),
                        Team::Named(n) => n.to_owned(),
                    },
                    domain: r.domain.code(),
                    goal: r.goal.to_owned(),
                    contact: org.staff.get(r.staff).map(|p| {
                        (
                            p.name.clone(),
                            p.role.to_owned(),
                            p.phone.clone(),
                            p.email.clone(),
                        )
                    }),
                    start: r.start,
                    end: r.end,
                    status: match r.status {
                        Status::Registered => "planned",
                        Status::Active => "active",
                        Status::Ended => "ended",
                    },
                    coordinator: r.coordinator,
                    relations,
                    born,
                    touched: born,
                });
            }
        }
        Ok(Feed {
            seed,
            salt,
            today,
            records,
        })
    }

    /// Every record of generation 0 and the ones held back, in id order.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the feed has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The day of generation `g`.
    pub fn day(&self, g: u32) -> NaiveDate {
        self.today
            .checked_add_days(Days::new(u64::from(g)))
            .unwrap_or(self.today)
    }

    /// The `updated_at` timestamp of generation `g` (RFC 3339, UTC).
    pub fn timestamp(&self, g: u32) -> String {
        format!("{}T02:00:00Z", self.day(g).format("%Y-%m-%d"))
    }

    fn change(&self, index: usize, g: u32) -> Change {
        let h = mix(self.seed ^ self.salt ^ ((index as u64) << 20) ^ u64::from(g)) % 1000;
        match h {
            0..30 => Change::Revised,
            30..45 => Change::Ended,
            _ => Change::None,
        }
    }

    /// Record `index` as it is at generation `g`; `None` before it appears.
    pub fn at(&self, index: usize, g: u32) -> Option<FeedRecord> {
        let base = self.records.get(index)?;
        if base.born > g {
            return None;
        }
        let mut r = base.clone();
        for k in base.born + 1..=g {
            match self.change(index, k) {
                Change::None => {}
                Change::Revised => {
                    r.goal = format!("{} (bijgesteld)", base.goal);
                    r.touched = k;
                }
                Change::Ended if r.status != "ended" => {
                    r.status = "ended";
                    r.end = Some(self.day(k).max(r.start));
                    r.touched = k;
                }
                Change::Ended => {}
            }
        }
        Some(r)
    }

    /// Record `index` as it first appears (in the generation it is born in).
    pub fn first_state(&self, index: usize) -> Option<FeedRecord> {
        self.records.get(index).cloned()
    }

    /// The id of record `index`.
    pub fn id(&self, index: usize) -> Option<&str> {
        self.records.get(index).map(|r| r.id.as_str())
    }

    /// The indexes of the records of generation `g` touched after generation `since` (all
    /// when `None`), in id order.
    pub fn changed_indexes(&self, g: u32, since: Option<u32>) -> impl Iterator<Item = usize> {
        (0..self.records.len()).filter(move |&i| {
            self.at(i, g)
                .is_some_and(|r| since.is_none_or(|s| r.touched > s))
        })
    }

    /// The records of generation `g` touched after generation `since` (all when `None`),
    /// in id order.
    pub fn changed_since(&self, g: u32, since: Option<u32>) -> impl Iterator<Item = FeedRecord> {
        (0..self.records.len())
            .filter_map(move |i| self.at(i, g))
            .filter(move |r| since.is_none_or(|s| r.touched > s))
    }

    /// The generation whose timestamp is `ts`, or the last one at or before it.
    pub fn generation_of(&self, ts: &str) -> Option<u32> {
        (0..=10_000u32)
            .take_while(|g| self.timestamp(*g).as_str() <= ts)
            .last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_deterministic_subsets_that_change_between_generations() {
        let a = Feed::build("okc-1", "OKC1-", 300, 5, 0.7).expect("feed");
        let b = Feed::build("okc-1", "OKC1-", 300, 5, 0.7).expect("feed");
        let other = Feed::build("okc-6", "OKC6-", 300, 5, 0.7).expect("feed");
        assert_eq!(a.records, b.records);
        assert!(!a.is_empty());
        assert_ne!(
            a.records.iter().map(|r| &r.bsn).collect::<Vec<_>>(),
            other.records.iter().map(|r| &r.bsn).collect::<Vec<_>>()
        );
        let g0: Vec<_> = a.changed_since(0, None).collect();
        assert!(g0.len() < a.len(), "some records are held back");
        let delta: Vec<_> = a.changed_since(1, Some(0)).collect();
        assert!(!delta.is_empty() && delta.len() < g0.len() / 5);
        assert!(delta.iter().all(|r| r.touched == 1));
        assert!(a.changed_since(1, Some(1)).next().is_none());
        assert_eq!(a.generation_of(&a.timestamp(2)), Some(2));
        assert_eq!(a.generation_of("2000-01-01"), None);
    }

    /// Every simulated source delivers its own organisation codes, which resolve through the
    /// registry: no two sources share a code, and none is a registry code.
    #[test]
    fn each_source_delivers_its_own_organisation_codes() {
        let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
        let mut seen = std::collections::HashMap::new();
        for (source, prefix) in [
            ("okc-1", "OKC1-"),
            ("okc-2", "OKC2-"),
            ("okc-3", "OKC3-"),
            ("okc-4", "OKC4-"),
            ("okc-5", "OKC5-"),
            ("okc-6", "OKC6-"),
            ("ris", "RIS-"),
        ] {
            let feed = Feed::build(source, prefix, 400, 3, 0.8).expect("feed");
            let mut codes = std::collections::BTreeSet::new();
            for r in feed.changed_since(0, None) {
                let org = registry
                    .resolve(source, &r.org)
                    .unwrap_or_else(|| panic!("{source}: {} resolves", r.org));
                assert_ne!(r.org, org.code, "{source} delivers its own code");
                assert!(
                    org.source_codes
                        .get(source)
                        .is_some_and(|c| c.contains(&r.org)),
                    "{source}: {} is one of its own codes",
                    r.org
                );
                codes.insert(r.org.clone());
            }
            assert!(codes.len() > 5, "{source}: {codes:?}");
            for c in codes {
                if let Some(other) = seen.insert(c.clone(), source) {
                    panic!("{source} and {other} share the code {c}");
                }
            }
        }
    }
}
