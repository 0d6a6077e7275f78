//! The assignment state machine of the WMO module: what WMO301/305/307 messages, applied in
//! order, say about each assignment (toewijzing).
//!
//! An assignment is identified by the provider's AGB code and the `ToewijzingNummer`. Every
//! operation *sets* state (never counts or toggles), so applying a message twice leaves the
//! same state as applying it once:
//!
//! | message | effect |
//! |---|---|
//! | WMO301 product | creates or replaces the assignment (product, dates, `RedenWijziging`); `RedenWijziging` 13 voids it |
//! | WMO305 product, `StatusAanlevering` 1/2 | support started on `Begindatum` (2 replaces an earlier start) |
//! | WMO305 product, 3 | the start is withdrawn |
//! | WMO307 product, 1/2 | support stopped on `Einddatum` with the WMO588 reason (2 replaces) |
//! | WMO307 product, 3 | the stop is withdrawn |
//! | `StatusAanlevering` 9 | nothing changes |
//!
//! A WMO305/307 product without `ToewijzingNummer` is matched on provider, client (BSN),
//! product (category, and code when both sides have one) and the assignment's start date
//! (`ToewijzingIngangsdatum`), as far as the message carries them; it must match exactly one
//! assignment.
//!
//! Memory: one entry per assignment (about 200 bytes, the BSN held in memory only), plus an
//! index by (provider, BSN).

use std::collections::HashMap;

use chrono::NaiveDate;
use matchpoint_connectors::iwmo::{Body, CHANGE_REASON_VOIDED, DeliveryStatus, Message, Product};

/// An assignment's identity: provider AGB code and `ToewijzingNummer`.
pub type Key = (String, u64);

/// What the messages say about one assignment.
#[derive(Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The client's BSN (in memory only).
    pub bsn: String,
    /// The client's birth date, when the message gives the whole date.
    pub birth_date: Option<NaiveDate>,
    /// The municipality that assigned it.
    pub municipality: String,
    /// The product, when assigned by product.
    pub product: Option<Product>,
    /// `Toewijzingsdatum`.
    pub assigned_on: NaiveDate,
    /// `Ingangsdatum`.
    pub start: NaiveDate,
    /// `Einddatum` of the assignment.
    pub end: Option<NaiveDate>,
    /// The last `RedenWijziging`.
    pub change_reason: Option<String>,
    /// Voided by a later WMO301 (`RedenWijziging` 13).
    pub voided: bool,
    /// `Begindatum` of the current start (WMO305).
    pub started: Option<NaiveDate>,
    /// `Einddatum` and WMO588 reason of the current stop (WMO307).
    pub stopped: Option<(NaiveDate, String)>,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the BSN or birth date.
        f.debug_struct("Assignment")
            .field("product", &self.product)
            .field("start", &self.start)
            .field("voided", &self.voided)
            .field("started", &self.started)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// Where an assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Assigned, support not started.
    Assigned,
    /// Support started.
    Started,
    /// Support stopped.
    Stopped,
    /// Voided by a later WMO301.
    Voided,
}

impl Phase {
    /// The status code the connector delivers (mapped by `codes.status` in the mapping).
    pub fn code(self) -> &'static str {
        match self {
            Phase::Assigned => "toegewezen",
            Phase::Started => "gestart",
            Phase::Stopped => "gestopt",
            Phase::Voided => "vervallen",
        }
    }
}

impl Assignment {
    /// Where it stands.
    pub fn phase(&self) -> Phase {
        if self.voided {
            Phase::Voided
        } else if self.stopped.is_some() {
            Phase::Stopped
        } else if self.started.is_some() {
            Phase::Started
        } else {
            Phase::Assigned
        }
    }
}

/// Why one product of a message could not be applied. Never holds a BSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The product element, e.g. `StartProduct[1]`.
    pub element: String,
    /// What is wrong.
    pub reason: String,
}

/// Every assignment known so far.
#[derive(Debug, Default)]
pub struct Assignments {
    by_key: HashMap<Key, Assignment>,
    /// (provider, BSN) → assignment numbers, for matching without `ToewijzingNummer`.
    by_client: HashMap<(String, String), Vec<u64>>,
}

impl Assignments {
    /// The assignment with this key.
    pub fn get(&self, key: &Key) -> Option<&Assignment> {
        self.by_key.get(key)
    }

    /// Number of assignments.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.by_key.keys()
    }

    /// The assignment numbers a provider has for a client (BSN).
    pub fn numbers_of(&self, provider: &str, bsn: &str) -> &[u64] {
        self.by_client
            .get(&(provider.to_owned(), bsn.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Applies one message; per product the assignment it concerned, or why not.
    pub fn apply(&mut self, m: &Message) -> Vec<Result<Key, Problem>> {
        let provider = m.header.provider().to_owned();
        match &m.body {
            Body::Assignment(products) => products
                .iter()
                .map(|p| {
                    let key = (provider.clone(), p.number);
                    let (started, stopped) = self
                        .by_key
                        .get(&key)
                        .map(|a| (a.started, a.stopped.clone()))
                        .unwrap_or_default();
                    if let Some(old) = self.by_key.get(&key)
                        && old.bsn != m.client.bsn
                    {
                        return Err(Problem {
                            element: format!("ToegewezenProduct ToewijzingNummer {}", p.number),
                            reason: "the assignment number is already used for another client by this provider".into(),
                        });
                    }
                    let a = Assignment {
                        bsn: m.client.bsn.clone(),
                        birth_date: m
                            .client
                            .birth_date_use
                            .is_none()
                            .then_some(m.client.birth_date),
                        municipality: m.header.municipality().to_owned(),
                        product: p.product.clone(),
                        assigned_on: p.assigned_on,
                        start: p.start,
                        end: p.end,
                        change_reason: p.change_reason.clone(),
                        voided: p.change_reason.as_deref() == Some(CHANGE_REASON_VOIDED),
                        started,
                        stopped,
                    };
                    let numbers = self
                        .by_client
                        .entry((provider.clone(), m.client.bsn.clone()))
                        .or_default();
                    if !numbers.contains(&p.number) {
                        numbers.push(p.number);
                    }
                    self.by_key.insert(key.clone(), a);
                    Ok(key)
                })
                .collect(),
            Body::Start(products) => products
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let element = format!("StartProduct[{}]", i + 1);
                    let key = self.find(
                        &provider,
                        &m.client.bsn,
                        p.number,
                        p.product.as_ref(),
                        p.assignment_start,
                        &element,
                    )?;
                    if let Some(a) = self.by_key.get_mut(&key) {
                        match p.status {
                            DeliveryStatus::First | DeliveryStatus::Corrected => {
                                a.started = Some(p.start);
                            }
                            DeliveryStatus::Withdrawn => a.started = None,
                            DeliveryStatus::Unchanged => {}
                        }
                    }
                    Ok(key)
                })
                .collect(),
            Body::Stop(products) => products
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let element = format!("StopProduct[{}]", i + 1);
                    let key = self.find(
                        &provider,
                        &m.client.bsn,
                        p.number,
                        p.product.as_ref(),
                        p.assignment_start,
                        &element,
                    )?;
                    if let Some(a) = self.by_key.get_mut(&key) {
                        match p.status {
                            DeliveryStatus::First | DeliveryStatus::Corrected => {
                                a.stopped = Some((p.end, p.reason.clone()));
                                // A stop proves a start; keep the provider's start date.
                                if a.started.is_none() {
                                    a.started = Some(p.start);
                                }
                            }
                            DeliveryStatus::Withdrawn => a.stopped = None,
                            DeliveryStatus::Unchanged => {}
                        }
                    }
                    Ok(key)
                })
                .collect(),
        }
    }

    /// The assignment a start or stop refers to.
    fn find(
        &self,
        provider: &str,
        bsn: &str,
        number: Option<u64>,
        product: Option<&Product>,
        assignment_start: Option<NaiveDate>,
        element: &str,
    ) -> Result<Key, Problem> {
        if let Some(n) = number {
            let key = (provider.to_owned(), n);
            return match self.by_key.get(&key) {
                Some(a) if a.bsn == bsn => Ok(key),
                Some(_) => Err(Problem {
                    element: element.to_owned(),
                    reason: format!(
                        "ToewijzingNummer {n} of this provider belongs to another client"
                    ),
                }),
                None => Err(Problem {
                    element: element.to_owned(),
                    reason: format!(
                        "no WMO301 assignment with ToewijzingNummer {n} for this provider (yet); the message is applied once its assignment arrives"
                    ),
                }),
            };
        }
        let candidates: Vec<u64> = self
            .by_client
            .get(&(provider.to_owned(), bsn.to_owned()))
            .map(|numbers| {
                numbers
                    .iter()
                    .copied()
                    .filter(|n| {
                        self.by_key
                            .get(&(provider.to_owned(), *n))
                            .is_some_and(|a| matches(a, product, assignment_start))
                    })
                    .collect()
            })
            .unwrap_or_default();
        match candidates.as_slice() {
            [n] => Ok((provider.to_owned(), *n)),
            [] => Err(Problem {
                element: element.to_owned(),
                reason: "no WMO301 assignment of this provider matches client, product and assignment start date (the message has no ToewijzingNummer)".into(),
            }),
            many => Err(Problem {
                element: element.to_owned(),
                reason: format!(
                    "{} WMO301 assignments of this provider match client, product and assignment start date; without a ToewijzingNummer the message is ambiguous",
                    many.len()
                ),
            }),
        }
    }
}

fn matches(a: &Assignment, product: Option<&Product>, start: Option<NaiveDate>) -> bool {
    let product_ok = match (product, &a.product) {
        (None, _) => true,
        (Some(p), Some(q)) => {
            p.category == q.category
                && match (&p.code, &q.code) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
        }
        (Some(_), None) => false,
    };
    product_ok && start.is_none_or(|s| s == a.start)
}
