//! Source feeds for the simulated upstream systems (`matchpoint sandbox`): the same seeded
//! population as `generate`, each source with its own seeded subset of households, its own
//! record ids, and records that change from one generation to the next.
//!
//! A feed is a sequence of [`FeedRecord`]s in a source-neutral form; each simulated upstream
//! renders them in its own format (REST/JSON, SOAP, …) with its own codes. Organisations are
//! given by the source's own code (its `source_codes` in `deploy/organisations.toml`: every
//! simulated source has its own list, as a real supplier would), which its mapping resolves
//! through the registry; an organisation the source has no code for is given by its registry
//! code, which every source may deliver.
//!
//! A feed holds no records: record `i` of generation `g` is a pure function of (seed,
//! source, `i`, `g`), generated when asked for. The population is one seeded stream of
//! households (persons and BSNs are drawn in order, so that every source and `generate` see
//! the same persons), so the feed keeps a bounded number of *checkpoints* — the population's
//! state before a household, a few hundred bytes each, at most [`MAX_CHECKPOINTS`] of them —
//! and generates from the nearest one at or before the record asked for. Memory stays the
//! same whatever `persons` is. [`Feed::page`] also hands back a [`Cursor`] where the page
//! stopped, which an upstream keeps for the next page of the delivery: paging in order
//! generates each household about once; any other page costs at most one stride between
//! checkpoints (about `len / 512` records) extra.
//!
//! Generations: at generation 0 most records exist; each later generation (`advance`) adds
//! the records held back for it, changes a few (a revised goal) and ends a few (status ended,
//! end date that day). A record's `updated_at` is the time of the last generation that
//! touched it, so an incremental sync (`updated_since`) sees exactly what changed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, Days, NaiveDate};
use matchpoint_schemas::Registry;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Serialize, Serializer};

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

/// A date serialized as `%Y-%m-%d` writes it (`2024-01-05`), without parsing a format
/// string per value: the renderers of the simulated upstreams write many of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ymd(pub NaiveDate);

impl Serialize for Ymd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (y, m, d) = (self.0.year(), self.0.month(), self.0.day());
        let Ok(y) = u32::try_from(y) else {
            return s.collect_str(&self.0.format("%Y-%m-%d"));
        };
        if y > 9999 {
            return s.collect_str(&self.0.format("%Y-%m-%d"));
        }
        let digit = |n: u32| b'0' + (n % 10) as u8;
        let buf = [
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(m / 10),
            digit(m),
            b'-',
            digit(d / 10),
            digit(d),
        ];
        // ASCII digits and dashes only, so always UTF-8.
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
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
    /// Households generated by walks after the build (tests check that paging in order
    /// generates each about once).
    generated: AtomicU64,
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
            .map(|org| own_code(&registry, source, &org.source_code))
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
            generated: AtomicU64::new(0),
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

    /// A walk that continues `cursor` (when it is at or before `from` and nearer to it than
    /// the nearest checkpoint) or starts at that checkpoint.
    fn walk_on(&self, cursor: Option<Cursor>, from: usize) -> Walk<'_> {
        let checkpoint = self
            .checkpoints
            .partition_point(|c| c.records <= from as u64)
            .checked_sub(1)
            .and_then(|i| self.checkpoints.get(i))
            .map_or(0, |c| c.records);
        match cursor {
            Some(c)
                if c.next_page == from as u64
                    || (c.position() <= from as u64 && c.position() >= checkpoint) =>
            {
                Walk {
                    feed: self,
                    population: Some(Population::resume(&c.population, &self.catalogue)),
                    household: c.household,
                    records: c.records,
                    from: from as u64,
                    buffer: c.buffer,
                }
            }
            _ => self.walk(from),
        }
    }

    /// One page: at most `size` records of generation `g` from index `from` on that were
    /// touched after generation `since` (all when `None`), in id order, and whether more
    /// follow. Continues from `cursor` (returned by the previous page of the same `g` and
    /// `since`) when it fits (see [`Feed::walk_on`]); returns the cursor at the first record
    /// of the next page, so that paging in order generates every household about once.
    pub fn page(
        &self,
        cursor: Option<Cursor>,
        from: usize,
        g: u32,
        since: Option<u32>,
        size: usize,
    ) -> (Vec<FeedRecord>, bool, Option<Cursor>) {
        let mut walk = self.walk_on(cursor, from);
        let mut records = Vec::with_capacity(size.min(1024));
        let mut next_page = from as u64;
        while let Some((i, base)) = walk.next() {
            if records.len() == size {
                // Only whether one more record matches; it stays for the next page.
                let matches = self
                    .evolve(i, base.clone(), g)
                    .is_some_and(|r| since.is_none_or(|s| r.touched > s));
                if matches {
                    walk.buffer.push_front(base);
                    return (records, true, walk.suspend(next_page));
                }
                continue;
            }
            if let Some(r) = self.evolve(i, base, g)
                && since.is_none_or(|s| r.touched > s)
            {
                records.push(r);
                next_page = i as u64 + 1;
            }
        }
        (records, false, None)
    }

    /// Households generated by walks since the build.
    pub fn households_generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Record `index` as it is at generation `g`; `None` before it appears (or past the
    /// end).
    pub fn at(&self, index: usize, g: u32) -> Option<FeedRecord> {
        let (i, base) = self.walk(index).next()?;
        (i == index).then(|| self.evolve(i, base, g)).flatten()
    }

    /// Record `index` as it first appears (in the generation it is born in).
    pub fn first_state(&self, index: usize) -> Option<FeedRecord> {
        let (i, base) = self.walk(index).next()?;
        (i == index).then_some(base)
    }

    /// Every record in id order with its index: as it first appears, and as it is at
    /// generation `g` (`None` before it appears). One walk of the feed.
    pub fn states(
        &self,
        g: u32,
    ) -> impl Iterator<Item = (usize, FeedRecord, Option<FeedRecord>)> + '_ {
        self.walk(0).map(move |(i, base)| {
            let now = self.evolve(i, base.clone(), g);
            (i, base, now)
        })
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

/// Where a walk stands, without borrowing the feed: kept by an upstream between the pages
/// of a delivery. A few hundred bytes plus the rest of one household's records.
#[derive(Debug)]
pub struct Cursor {
    population: Suspended,
    household: u64,
    records: u64,
    buffer: VecDeque<FeedRecord>,
    /// The index the next page starts from (after the last record served): the records
    /// from there to [`Cursor::position`] are not part of the delivery.
    next_page: u64,
}

impl Cursor {
    /// The index of the next record it yields.
    fn position(&self) -> u64 {
        self.records - self.buffer.len() as u64
    }
}

impl Walk<'_> {
    /// The walk's state, to continue later with [`Feed::page`].
    fn suspend(self, next_page: u64) -> Option<Cursor> {
        Some(Cursor {
            population: self.population?.suspend(),
            household: self.household,
            records: self.records,
            buffer: self.buffer,
            next_page,
        })
    }
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
            self.feed.generated.fetch_add(1, Ordering::Relaxed);
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

    /// Pages of `size` in order; returns the records and the households generated.
    fn paged(
        feed: &Feed,
        g: u32,
        since: Option<u32>,
        size: usize,
        keep: bool,
    ) -> (Vec<FeedRecord>, u64) {
        let before = feed.households_generated();
        let (mut cursor, mut from, mut out) = (None, 0, Vec::new());
        loop {
            let (page, more, next) = feed.page(cursor, from, g, since, size);
            assert!(page.len() <= size);
            if let Some(last) = page.last() {
                from = feed.index_after(&last.id);
            }
            out.extend(page);
            cursor = if keep { next } else { None };
            if !more {
                return (out, feed.households_generated() - before);
            }
        }
    }

    #[test]
    fn paging_in_order_with_the_cursor_generates_each_household_about_once() {
        let feed = Feed::build("okc-1", "OKC1-", 30_000, 4, 0.7).expect("feed");
        let before = feed.households_generated();
        let all: Vec<_> = feed.changed_since(0, None).collect();
        let one_walk = feed.households_generated() - before;
        assert!(one_walk > 5_000, "{one_walk}");

        let (with_cursor, generated) = paged(&feed, 0, None, 20, true);
        assert_eq!(with_cursor, all);
        assert!(
            generated <= one_walk + 2,
            "{generated} households for {one_walk}"
        );
        // From checkpoints alone every page walks up to one stride again.
        let (without, generated) = paged(&feed, 0, None, 20, false);
        assert_eq!(without, all);
        assert!(
            generated > one_walk * 3 / 2,
            "{generated} households for {one_walk}"
        );
        // An incremental delivery pages the same way.
        let changed: Vec<_> = feed.changed_since(2, Some(0)).collect();
        assert!(!changed.is_empty());
        assert_eq!(paged(&feed, 2, Some(0), 7, true).0, changed);
        assert_eq!(paged(&feed, 2, Some(0), 7, false).0, changed);
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
