//! The seeded population: households of persons, each person's involvements (records), and
//! which records are written with a defect. Generated one household at a time, so memory does
//! not grow with the number of persons; the same seed always yields the same households.

use chrono::{Days, Months, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bsn::{BsnAllocator, corrupt};
use super::catalogue::{Catalogue, Domain, Teams, domains_for};
use super::names::{AREAS, CLIENT_SURNAMES, FIRST_NAMES_F, FIRST_NAMES_M};

/// The one defect of a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    /// The client's BSN is replaced by this number, which fails the elfproef.
    InvalidBsn(u32),
    /// `contactpersoon/naam` is left out.
    MissingContact,
    /// `domein` holds this unknown code.
    UnknownDomain(&'static str),
    /// `periode/@begin` is written as dd-mm-yyyy.
    BadDate,
    /// The record repeats the id of the (good) record just before it.
    Duplicate,
}

impl Defect {
    /// Reason code in the manifest (the mapping's rejection codes).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Defect::InvalidBsn(_) => "invalid_bsn",
            Defect::MissingContact => "missing_field",
            Defect::UnknownDomain(_) => "unknown_code",
            Defect::BadDate => "bad_date",
            Defect::Duplicate => "duplicate_record",
        }
    }

    /// Field at fault in the manifest.
    pub(crate) fn field(self) -> Option<&'static str> {
        match self {
            Defect::InvalidBsn(_) => Some("client/bsn"),
            Defect::MissingContact => Some("contactpersoon/naam"),
            Defect::UnknownDomain(_) => Some("domein"),
            Defect::BadDate => Some("periode/@begin"),
            Defect::Duplicate => None,
        }
    }
}

/// Unknown life-domain codes written into bad records (letters only, not in the mapping).
pub(crate) const UNKNOWN_DOMAIN_CODES: &[&str] = &["XYZ", "ONB", "QRS", "ABC"];

/// Status of an involvement, as coded in the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Registered,
    Active,
    Ended,
}

impl Status {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Status::Registered => "aangemeld",
            Status::Active => "actief",
            Status::Ended => "afgesloten",
        }
    }
}

/// One person of a household.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub bsn: u32,
    pub first_name: &'static str,
    pub surname: &'static str,
    pub birth: NaiveDate,
    pub adult: bool,
}

/// The team of an involvement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Team {
    /// "Team <area>" of the household's area.
    Area,
    Named(&'static str),
}

/// One involvement record of the export.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Numeric part of the record id.
    pub id: u64,
    /// Index of the person in the household.
    pub person: usize,
    pub org: usize,
    pub domain: Domain,
    pub goal: &'static str,
    pub team: Team,
    pub staff: usize,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub status: Status,
    pub coordinator: bool,
    pub defect: Option<Defect>,
}

/// A household: adults first, then children, sharing an area; and their records.
#[derive(Debug, Clone)]
pub(crate) struct Household {
    pub area: usize,
    pub persons: Vec<Person>,
    pub records: Vec<Record>,
}

/// Why the population cannot be generated.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PopulationError {
    /// The BSN space is used up.
    BsnSpaceExhausted,
}

const FIRST_START: (i32, u32, u32) = (2019, 1, 1);
/// Share of households that get a coordinator when several organisations are involved.
const COORDINATOR_SHARE: f64 = 0.4;

/// Everything of a [`Population`] but the catalogue: the point at which generation can
/// resume ([`Population::suspend`], [`Population::resume`]). A few hundred bytes.
#[derive(Debug, Clone)]
pub(crate) struct Suspended {
    rng: ChaCha8Rng,
    bsns: BsnAllocator,
    today: NaiveDate,
    first_start: NaiveDate,
    bad_share: f64,
    remaining: u64,
    next_id: u64,
    bad_counter: u64,
    area_total: u32,
}

/// Generates households in a fixed order from a seed.
pub(crate) struct Population<'c> {
    rng: ChaCha8Rng,
    bsns: BsnAllocator,
    catalogue: &'c Catalogue,
    today: NaiveDate,
    first_start: NaiveDate,
    bad_share: f64,
    remaining: u64,
    next_id: u64,
    bad_counter: u64,
    area_total: u32,
}

impl<'c> Population<'c> {
    pub(crate) fn new(
        seed: u64,
        persons: u64,
        bad_share: f64,
        today: NaiveDate,
        catalogue: &'c Catalogue,
    ) -> Self {
        Population {
            rng: ChaCha8Rng::seed_from_u64(seed),
            bsns: BsnAllocator::new(seed),
            catalogue,
            today,
            first_start: NaiveDate::from_ymd_opt(FIRST_START.0, FIRST_START.1, FIRST_START.2)
                .unwrap_or(today),
            bad_share,
            remaining: persons,
            next_id: 1,
            bad_counter: 0,
            area_total: AREAS.iter().map(|a| a.weight).sum(),
        }
    }

    /// Where generation stands now: resuming from it yields the same households as this
    /// population would from here on.
    pub(crate) fn suspend(&self) -> Suspended {
        Suspended {
            rng: self.rng.clone(),
            bsns: self.bsns.clone(),
            today: self.today,
            first_start: self.first_start,
            bad_share: self.bad_share,
            remaining: self.remaining,
            next_id: self.next_id,
            bad_counter: self.bad_counter,
            area_total: self.area_total,
        }
    }

    /// A population that continues from `state` (taken with the same `catalogue`).
    pub(crate) fn resume(state: &Suspended, catalogue: &'c Catalogue) -> Self {
        let s = state.clone();
        Population {
            rng: s.rng,
            bsns: s.bsns,
            catalogue,
            today: s.today,
            first_start: s.first_start,
            bad_share: s.bad_share,
            remaining: s.remaining,
            next_id: s.next_id,
            bad_counter: s.bad_counter,
            area_total: s.area_total,
        }
    }

    /// The next household, or `None` when every person has been generated.
    pub(crate) fn next_household(&mut self) -> Result<Option<Household>, PopulationError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let area = self.draw_area();
        let (mut adults, mut children) = self.draw_composition();
        // The last household takes only the persons that are left.
        while (adults + children) as u64 > self.remaining {
            if children > 0 {
                children -= 1;
            } else {
                adults -= 1;
            }
        }
        self.remaining -= (adults + children) as u64;

        let mut persons = Vec::with_capacity(adults + children);
        let first_age: u32 = if children > 0 {
            self.rng.random_range(21..=50)
        } else {
            self.rng.random_range(19..=75)
        };
        let family_name = *CLIENT_SURNAMES.choose(&mut self.rng).unwrap_or(&"Jansen");
        for i in 0..adults {
            let age = if i == 0 {
                first_age
            } else {
                first_age
                    .saturating_add_signed(self.rng.random_range(-6..=8))
                    .max(19)
            };
            let surname = if i == 0 || self.rng.random_bool(0.35) {
                family_name
            } else {
                *CLIENT_SURNAMES.choose(&mut self.rng).unwrap_or(&"Jansen")
            };
            let person = self.person(age, surname, true)?;
            persons.push(person);
        }
        let youngest_parent = persons
            .iter()
            .map(|p| age_on(p.birth, self.today))
            .min()
            .unwrap_or(18);
        let max_child_age = youngest_parent.saturating_sub(18).min(17);
        for _ in 0..children {
            let age = self.rng.random_range(0..=max_child_age);
            let person = self.person(age, family_name, false)?;
            persons.push(person);
        }

        let mut records = Vec::new();
        let district = AREAS.get(area).map_or(0, |a| a.district);
        for (idx, p) in persons.iter().enumerate() {
            let age = age_on(p.birth, self.today);
            let available = self.catalogue.eligible_count(district, age);
            let wanted = match self.rng.random_range(0..100u32) {
                0..55 => 1,
                55..85 => 2,
                _ => 3,
            }
            .min(available);
            let mut orgs: Vec<usize> = Vec::with_capacity(wanted);
            let mut attempts = 0;
            while orgs.len() < wanted && attempts < 20 {
                attempts += 1;
                if let Some(o) = self.catalogue.draw_org(&mut self.rng, district, age)
                    && !orgs.contains(&o)
                {
                    orgs.push(o);
                }
            }
            for org in orgs {
                let mut record = self.involvement(idx, p, org);
                if self.bad_share > 0.0 && self.rng.random_bool(self.bad_share) {
                    let kind = self.bad_counter % 5;
                    self.bad_counter += 1;
                    if kind == 4 {
                        // The record itself is good; a second record repeats its id.
                        let mut dup = self.involvement(idx, p, org);
                        dup.id = record.id;
                        self.next_id -= 1;
                        dup.defect = Some(Defect::Duplicate);
                        records.push(record);
                        records.push(dup);
                        continue;
                    }
                    record.defect = Some(match kind {
                        0 => Defect::InvalidBsn(corrupt(p.bsn, self.rng.random_range(1..=9))),
                        1 => Defect::MissingContact,
                        2 => Defect::UnknownDomain(
                            UNKNOWN_DOMAIN_CODES
                                .choose(&mut self.rng)
                                .copied()
                                .unwrap_or("XYZ"),
                        ),
                        _ => Defect::BadDate,
                    });
                }
                records.push(record);
            }
        }
        self.choose_coordinator(&mut records);
        Ok(Some(Household {
            area,
            persons,
            records,
        }))
    }

    fn draw_area(&mut self) -> usize {
        let mut x = self.rng.random_range(0..self.area_total);
        for (i, a) in AREAS.iter().enumerate() {
            if x < a.weight {
                return i;
            }
            x -= a.weight;
        }
        0
    }

    /// (adults, children): singles, couples, single parents and two-parent families.
    fn draw_composition(&mut self) -> (usize, usize) {
        match self.rng.random_range(0..100u32) {
            0..12 => (1, 0),
            12..22 => (2, 0),
            22..52 => (1, self.draw_children()),
            _ => (2, self.draw_children()),
        }
    }

    fn draw_children(&mut self) -> usize {
        match self.rng.random_range(0..100u32) {
            0..35 => 1,
            35..70 => 2,
            70..90 => 3,
            _ => 4,
        }
    }

    fn person(
        &mut self,
        age: u32,
        surname: &'static str,
        adult: bool,
    ) -> Result<Person, PopulationError> {
        let bsn = self
            .bsns
            .next_bsn()
            .ok_or(PopulationError::BsnSpaceExhausted)?;
        let names = if self.rng.random_bool(0.5) {
            FIRST_NAMES_F
        } else {
            FIRST_NAMES_M
        };
        let first_name = names.choose(&mut self.rng).copied().unwrap_or("Sanne");
        // Born `age` years and 0..=364 days before today, so exactly `age` years old today.
        let birth = self
            .today
            .checked_sub_months(Months::new(age * 12))
            .and_then(|d| d.checked_sub_days(Days::new(self.rng.random_range(0..365u64))))
            .unwrap_or(self.today);
        Ok(Person {
            bsn,
            first_name,
            surname,
            birth,
            adult,
        })
    }

    /// A good involvement of person `idx` with organisation `org`, with the next record id.
    fn involvement(&mut self, idx: usize, p: &Person, org: usize) -> Record {
        let age = age_on(p.birth, self.today);
        let catalogue = self.catalogue;
        let o = &catalogue.orgs[org];
        let domain = domains_for(o.profile, age)
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(Domain::Opv);
        let goal = domain.goals().choose(&mut self.rng).copied().unwrap_or("");
        let team = match o.profile.teams {
            Teams::PerArea => Team::Area,
            Teams::Named(names) => {
                Team::Named(names.choose(&mut self.rng).copied().unwrap_or("Team"))
            }
        };
        let staff = self.rng.random_range(0..o.staff.len().max(1));

        let earliest = self.first_start.max(p.birth);
        let span = (self.today - earliest).num_days().max(0) as u64;
        let roll = self.rng.random_range(0..100u32);
        let (start, end, status) = if roll < 8 {
            // Registered recently, support not started yet.
            let back = self.rng.random_range(0..=span.min(60));
            (sub_days(self.today, back), None, Status::Registered)
        } else {
            let start = earliest
                .checked_add_days(Days::new(self.rng.random_range(0..=span)))
                .unwrap_or(earliest);
            let left = (self.today - start).num_days();
            if roll < 38 && left > 14 {
                let len = self.rng.random_range(14..=left) as u64;
                let end = start.checked_add_days(Days::new(len)).unwrap_or(self.today);
                (start, Some(end), Status::Ended)
            } else {
                (start, None, Status::Active)
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        Record {
            id,
            person: idx,
            org,
            domain,
            goal,
            team,
            staff,
            start,
            end,
            status,
            coordinator: false,
            defect: None,
        }
    }

    /// At most one coordinator per household; about 40% of households with several
    /// organisations get one, preferably the multi-problem team, always an open involvement.
    fn choose_coordinator(&mut self, records: &mut [Record]) {
        let Some(first) = records.first() else {
            return;
        };
        let several = records.iter().any(|r| r.org != first.org);
        if !several || !self.rng.random_bool(COORDINATOR_SHARE) {
            return;
        }
        let candidates: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.defect.is_none() && r.status != Status::Ended)
            .map(|(i, _)| i)
            .collect();
        let preferred = candidates.iter().copied().find(|&i| {
            self.catalogue.orgs[records[i].org].profile.kind == "multi_problem_households"
        });
        let chosen = preferred.or_else(|| candidates.choose(&mut self.rng).copied());
        if let Some(i) = chosen {
            records[i].coordinator = true;
        }
    }
}

fn sub_days(d: NaiveDate, days: u64) -> NaiveDate {
    d.checked_sub_days(Days::new(days)).unwrap_or(d)
}

/// Age in whole years on `today`.
pub(crate) fn age_on(birth: NaiveDate, today: NaiveDate) -> u32 {
    today.years_since(birth).unwrap_or(0)
}
