//! Source feeds for the simulated upstream systems (`matchpoint sandbox`): the same seeded
//! population as `generate`, each source with its own seeded subset of households, its own
//! record ids, and records that change from one generation to the next.
//!
//! A feed is a sequence of [`FeedRecord`]s in a source-neutral form; each simulated upstream
//! renders them in its own format (REST/JSON, SOAP, …) with its own codes. Organisations are
//! given by their registry code, which every source may deliver (the registry resolves a
//! source's own codes first, then registry codes).
//!
//! A feed holds no records: record `i` of generation `g` is a pure function of (seed,
//! source, `i`, `g`), generated when asked for. The population is one seeded stream of
//! households (persons and BSNs are drawn in order, so that every source and `generate` see
//! the same persons), so the feed keeps a bounded number of *checkpoints* — the population's
//! state before a household, a few hundred bytes each, at most [`MAX_CHECKPOINTS`] of them —
//! and generates from the nearest one at or before the record asked for. Memory stays the
//! same whatever `persons` is; a page costs the records it serves plus at most one stride
//! between checkpoints (about `len / 512` records).
//!
//! Generations: at generation 0 most records exist; each later generation (`advance`) adds
//! the records held back for it, changes a few (a revised goal) and ends a few (status ended,
//! end date that day). A record's `updated_at` is the time of the last generation that
//! touched it, so an incremental sync (`updated_since`) sees exactly what changed.

use std::collections::VecDeque;

use chrono::{Days, NaiveDate};
use matchpoint_schemas::Registry;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::ORGANISATIONS_TOML;
use super::catalogue::{Catalogue, area_team};
use super::population::{Household, Population, Status, Suspended, Team};

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

/// Most checkpoints a feed keeps; when a build reaches it, every other one is dropped and
/// the stride doubles.
pub const MAX_CHECKPOINTS: usize = 1024;
/// Records between checkpoints to begin with.
const FIRST_STRIDE: u64 = 64;

/// The population's state before a household, and how far the feed had got there.
#[derive(Debug, Clone)]
struct Checkpoint {
    population: Suspended,
    /// Households drawn before it.
    household: u64,
    /// Records of this feed before it (the next record has index `records`).
    records: u64,
}

/// A source's feed: how to generate its records at generation 0 and the rules of later
/// generations. Holds no records (see the module documentation).
#[derive(Debug)]
pub struct Feed {
    prefix: String,
    seed: u64,
    salt: u64,
    share: f64,
    today: NaiveDate,
    catalogue: Catalogue,
    /// Registry code of each catalogue organisation, by index.
    org_codes: Vec<String>,
    len: usize,
    checkpoints: Vec<Checkpoint>,
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
    /// per source), with every involvement of their members. Walks the population once to
    /// count the records and place the checkpoints.
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
        let org_codes = catalogue
            .orgs
            .iter()
            .map(|org| {
                registry
                    .resolve(super::catalogue::SOURCE, &org.source_code)
                    .map_or_else(|| org.source_code.clone(), |o| o.code.clone())
            })
            .collect();
        let base = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default();
        let today = base.checked_add_days(Days::new(seed % 28)).unwrap_or(base);
        let mut feed = Feed {
            prefix: prefix.to_owned(),
            seed,
            salt: salt_of(source),
            share,
            today,
            catalogue,
            org_codes,
            len: 0,
            checkpoints: Vec::new(),
        };
        let (len, checkpoints) = feed.walk_all(persons)?;
        feed.len = len;
        feed.checkpoints = checkpoints;
        Ok(feed)
    }

    /// The first walk: counts the records and places the checkpoints.
    fn walk_all(&self, persons: u64) -> Result<(usize, Vec<Checkpoint>), String> {
        let mut population = Population::new(self.seed, persons, 0.0, self.today, &self.catalogue);
        let mut checkpoints = Vec::new();
        let mut stride = FIRST_STRIDE;
        let mut household = 0u64;
        let mut records = 0u64;
        let mut scratch = VecDeque::new();
        loop {
            let due = checkpoints
                .last()
                .is_none_or(|c: &Checkpoint| records >= c.records + stride);
            if due {
                checkpoints.push(Checkpoint {
                    population: population.suspend(),
                    household,
                    records,
                });
                if checkpoints.len() >= MAX_CHECKPOINTS {
                    let mut i = 0usize;
                    checkpoints.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    stride *= 2;
                }
            }
            let Some(h) = population
                .next_household()
                .map_err(|_| format!("the BSN space cannot hold {persons} persons"))?
            else {
                break;
            };
            household += 1;
            self.records_of(&h, household, &mut records, &mut scratch);
            scratch.clear();
        }
        let len = usize::try_from(records).map_err(|_| format!("{records} records"))?;
        Ok((len, checkpoints))
    }

    /// Appends the records of household number `household` (1-based) to `out` when this
    /// source knows it, numbering them on from `records`.
    fn records_of(
        &self,
        h: &Household,
        household: u64,
        records: &mut u64,
        out: &mut VecDeque<FeedRecord>,
    ) {
        let draw = mix(self.seed ^ self.salt ^ household.wrapping_mul(0x2545_F491_4F6C_DD1D));
        if (draw % 10_000) as f64 >= self.share * 10_000.0 {
            return;
        }
        for r in &h.records {
            let Some(person) = h.persons.get(r.person) else {
                continue;
            };
            let (Some(org), Some(org_code)) =
                (self.catalogue.orgs.get(r.org), self.org_codes.get(r.org))
            else {
                continue;
            };
            *records += 1;
            let number = *records;
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
            let born = self.born(number);
            out.push_back(FeedRecord {
                id: format!("{}{number:08}", self.prefix),
                bsn: format!("{:09}", person.bsn),
                name: format!("{} {}", person.first_name, person.surname),
                birth: person.birth,
                org: org_code.clone(),
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

    /// The generation record number `number` (1-based) first appears in: one record in
    /// twenty is held back for a later generation (1 to 3).
    fn born(&self, number: u64) -> u32 {
        let held = mix(self.seed ^ self.salt ^ number.wrapping_mul(0x9E37_79B9));
        if held.is_multiple_of(20) {
            1 + (held >> 8) as u32 % 3
        } else {
            0
        }
    }

    /// Every record of generation 0 and the ones held back.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the feed has no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    /// Record `index` (as first generated) at generation `g`; `None` before it appears.
    fn evolve(&self, index: usize, base: FeedRecord, g: u32) -> Option<FeedRecord> {
        if base.born > g {
            return None;
        }
        let mut r = base;
        for k in r.born + 1..=g {
            match self.change(index, k) {
                Change::None => {}
                Change::Revised => {
                    if !r.goal.ends_with(REVISED) {
                        r.goal.push_str(REVISED);
                    }
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

    /// The records from index `from` on, as first generated, with their indexes: generated
    /// from the nearest checkpoint at or before `from`.
    fn walk(&self, from: usize) -> Walk<'_> {
        let at = self
            .checkpoints
            .partition_point(|c| c.records <= from as u64)
            .saturating_sub(1);
        match self.checkpoints.get(at) {
            Some(c) => Walk {
                feed: self,
                population: Some(Population::resume(&c.population, &self.catalogue)),
                household: c.household,
                records: c.records,
                from: from as u64,
                buffer: VecDeque::new(),
            },
            None => Walk {
                feed: self,
                population: None,
                household: 0,
                records: 0,
                from: 0,
                buffer: VecDeque::new(),
            },
        }
    }

    /// Record `index` as it is at generation `g`; `None` before it appears (or past the
    /// end).
    pub fn at(&self, index: usize, g: u32) -> Option<FeedRecord> {
        let (i, base) = self.walk(index).next()?;
        (i == index).then(|| self.evolve(i, base, g)).flatten()
    }

    /// The id of record `index`.
    pub fn id(&self, index: usize) -> Option<String> {
        (index < self.len).then(|| format!("{}{:08}", self.prefix, index + 1))
    }

    /// The index of the first record whose id sorts after `id` (`len` when none does).
    pub fn index_after(&self, id: &str) -> usize {
        let (mut lo, mut hi) = (0usize, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.id(mid).is_some_and(|m| m.as_str() <= id) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The records of generation `g` from index `from` on that were touched after
    /// generation `since` (all when `None`), in id order, with their indexes.
    pub fn changed_from(
        &self,
        from: usize,
        g: u32,
        since: Option<u32>,
    ) -> impl Iterator<Item = (usize, FeedRecord)> + '_ {
        self.walk(from)
            .filter_map(move |(i, base)| self.evolve(i, base, g).map(|r| (i, r)))
            .filter(move |(_, r)| since.is_none_or(|s| r.touched > s))
    }

    /// The records of generation `g` touched after generation `since` (all when `None`),
    /// in id order.
    pub fn changed_since(
        &self,
        g: u32,
        since: Option<u32>,
    ) -> impl Iterator<Item = FeedRecord> + '_ {
        self.changed_from(0, g, since).map(|(_, r)| r)
    }

    /// How many records [`Feed::changed_since`] yields. Without `since` this needs no
    /// records (only the generation each one appears in); with it, one walk of the feed.
    pub fn count_changed(&self, g: u32, since: Option<u32>) -> usize {
        match since {
            None => (1..=self.len as u64).filter(|&n| self.born(n) <= g).count(),
            Some(_) => self.changed_since(g, since).count(),
        }
    }

    /// The generation whose timestamp is `ts`, or the last one at or before it.
    pub fn generation_of(&self, ts: &str) -> Option<u32> {
        (0..=10_000u32)
            .take_while(|g| self.timestamp(*g).as_str() <= ts)
            .last()
    }
}

/// Suffix of a revised goal.
const REVISED: &str = " (bijgesteld)";

/// Records of a feed in order from one index on, generated household by household.
struct Walk<'f> {
    feed: &'f Feed,
    /// `None` for an empty feed.
    population: Option<Population<'f>>,
    household: u64,
    /// Records numbered so far.
    records: u64,
    /// First index wanted.
    from: u64,
    /// Records of the current household not yet yielded, with their index.
    buffer: VecDeque<FeedRecord>,
}

impl Iterator for Walk<'_> {
    type Item = (usize, FeedRecord);

    fn next(&mut self) -> Option<(usize, FeedRecord)> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                // Records in the buffer are numbered up to `records`.
                let index = self.records - 1 - self.buffer.len() as u64;
                if index < self.from {
                    continue;
                }
                return Some((usize::try_from(index).ok()?, r));
            }
            let population = self.population.as_mut()?;
            let h = population.next_household().ok().flatten()?;
            self.household += 1;
            self.feed
                .records_of(&h, self.household, &mut self.records, &mut self.buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(feed: &Feed) -> Vec<FeedRecord> {
        feed.walk(0).map(|(_, r)| r).collect()
    }

    #[test]
    fn feeds_are_deterministic_subsets_that_change_between_generations() {
        let a = Feed::build("okc-1", "OKC1-", 300, 5, 0.7).expect("feed");
        let b = Feed::build("okc-1", "OKC1-", 300, 5, 0.7).expect("feed");
        let other = Feed::build("okc-6", "OKC6-", 300, 5, 0.7).expect("feed");
        assert_eq!(all(&a), all(&b));
        assert!(!a.is_empty());
        assert_eq!(all(&a).len(), a.len());
        assert_ne!(
            all(&a).iter().map(|r| r.bsn.clone()).collect::<Vec<_>>(),
            all(&other)
                .iter()
                .map(|r| r.bsn.clone())
                .collect::<Vec<_>>()
        );
        let g0: Vec<_> = a.changed_since(0, None).collect();
        assert!(g0.len() < a.len(), "some records are held back");
        assert_eq!(a.count_changed(0, None), g0.len());
        let delta: Vec<_> = a.changed_since(1, Some(0)).collect();
        assert!(!delta.is_empty() && delta.len() < g0.len() / 5);
        assert_eq!(a.count_changed(1, Some(0)), delta.len());
        assert!(delta.iter().all(|r| r.touched == 1));
        assert!(a.changed_since(1, Some(1)).next().is_none());
        assert_eq!(a.generation_of(&a.timestamp(2)), Some(2));
        assert_eq!(a.generation_of("2000-01-01"), None);
    }

    #[test]
    fn any_record_generated_from_its_checkpoint_equals_the_record_of_one_full_walk() {
        // Enough persons for the build to thin its checkpoints at least once.
        let feed = Feed::build("okc-6", "OKC6-", 80_000, 3, 0.6).expect("feed");
        assert!(
            feed.len() > FIRST_STRIDE as usize * MAX_CHECKPOINTS,
            "{}",
            feed.len()
        );
        assert!(feed.checkpoints.len() < MAX_CHECKPOINTS);
        assert!(feed.checkpoints.len() > MAX_CHECKPOINTS / 4);
        let g = 2;
        let walked: Vec<FeedRecord> = feed.changed_since(g, None).collect();
        assert_eq!(walked.len(), feed.count_changed(g, None));
        // Each record's id gives its index; every 97th, and the first and last few, are
        // generated again on their own (from a checkpoint) and must be identical.
        let mut checked = 0;
        for (n, r) in walked.iter().enumerate() {
            if n % 97 != 0 && n > 3 && n + 3 < walked.len() {
                continue;
            }
            let index = feed.index_after(&r.id) - 1;
            assert_eq!(feed.id(index).as_deref(), Some(r.id.as_str()));
            assert_eq!(feed.at(index, g).as_ref(), Some(r), "record {index}");
            checked += 1;
        }
        assert!(checked > 100, "{checked}");
        // Ids number from 1 and page boundaries work on any string.
        assert_eq!(feed.index_after(""), 0);
        assert_eq!(feed.index_after("OKC6-00000001"), 1);
        assert_eq!(feed.index_after("OKC6-99999999"), feed.len());
        assert_eq!(feed.index_after("ZZZ"), feed.len());
        assert!(feed.at(feed.len(), g).is_none());
        // Paging from an index continues exactly where one walk is.
        let from = feed.len() / 2 + 7;
        let tail: Vec<_> = feed
            .changed_from(from, 1, Some(0))
            .map(|(_, r)| r)
            .collect();
        let whole: Vec<_> = feed
            .changed_from(0, 1, Some(0))
            .filter(|(i, _)| *i >= from)
            .map(|(_, r)| r)
            .collect();
        assert!(!tail.is_empty());
        assert_eq!(tail, whole);
    }
}
