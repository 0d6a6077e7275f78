//! The generator's catalogue: life domains with goals, what each kind of organisation does,
//! and the organisations (from the registry) with their teams and professionals.

use matchpoint_schemas::Registry;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use super::names::{
    AREAS, CENTRUM, DISTRICTS, INITIALS, NIEUW_WEST, NOORD, OOST, PROFESSIONAL_SURNAMES, WEST,
    ZUID, ZUIDOOST, email_local_part, professional_name,
};

/// The source whose export the generator writes.
pub(crate) const SOURCE: &str = "okc-2";

/// Life domains, as coded in the okc-2 export (`deploy/mappings/okc-2.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    Jgz,
    Opv,
    Jh,
    Wi,
    Shv,
    Won,
    Ggz,
    Vsl,
    Ond,
    Vei,
    Wmo,
    Som,
}

impl Domain {
    #[cfg(test)]
    pub(crate) const ALL: [Domain; 12] = [
        Domain::Jgz,
        Domain::Opv,
        Domain::Jh,
        Domain::Wi,
        Domain::Shv,
        Domain::Won,
        Domain::Ggz,
        Domain::Vsl,
        Domain::Ond,
        Domain::Vei,
        Domain::Wmo,
        Domain::Som,
    ];

    /// The okc-2 code of the domain.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Domain::Jgz => "JGZ",
            Domain::Opv => "OPV",
            Domain::Jh => "JH",
            Domain::Wi => "WI",
            Domain::Shv => "SHV",
            Domain::Won => "WON",
            Domain::Ggz => "GGZ",
            Domain::Vsl => "VSL",
            Domain::Ond => "OND",
            Domain::Vei => "VEI",
            Domain::Wmo => "WMO",
            Domain::Som => "SOM",
        }
    }

    /// Goals of support in this domain (Dutch, as professionals write them).
    pub(crate) fn goals(self) -> &'static [&'static str] {
        match self {
            Domain::Jgz => &[
                "Volgen van groei en ontwikkeling van het kind",
                "Extra contactmomenten bij zorgen over de ontwikkeling",
                "Begeleiding bij voeding en slapen van de baby",
            ],
            Domain::Opv => &[
                "Ondersteuning bij opvoeding en ontwikkeling van het kind",
                "Versterken van opvoedvaardigheden van de ouders",
                "Meer structuur en rust in het gezin",
            ],
            Domain::Jh => &[
                "Behandeling van gedragsproblemen van het kind",
                "Ambulante gezinsbehandeling",
                "Veilig opgroeien in het eigen gezin",
            ],
            Domain::Wi => &[
                "Aanvraag en behoud van een bijstandsuitkering",
                "Toeleiding naar betaald werk",
                "Re-integratie met begeleiding op de werkvloer",
            ],
            Domain::Shv => &[
                "Stabiliseren van de schuldensituatie",
                "Schuldregeling en budgetbeheer",
                "Inkomensbeheer en betalingsafspraken met schuldeisers",
            ],
            Domain::Won => &[
                "Voorkomen van huisuitzetting bij huurachterstand",
                "Urgentieaanvraag voor passende woonruimte",
                "Aanpak van overlast en woonproblemen",
            ],
            Domain::Ggz => &[
                "Behandeling van depressieve klachten",
                "Begeleiding bij angst- en stressklachten",
                "Ambulante psychiatrische begeleiding",
            ],
            Domain::Vsl => &[
                "Verminderen van alcoholgebruik",
                "Behandeling van cannabisverslaving",
                "Begeleiding bij gokproblematiek",
            ],
            Domain::Ond => &[
                "Passend onderwijs en extra ondersteuning op school",
                "Terugdringen van schoolverzuim",
                "Begeleiding bij leerproblemen",
            ],
            Domain::Vei => &[
                "Veiligheid in het gezin na een melding van huiselijk geweld",
                "Veiligheidsplan en risicotaxatie",
                "Stoppen van huiselijk geweld",
            ],
            Domain::Wmo => &[
                "Ambulante ondersteuning bij zelfstandig wonen",
                "Dagbesteding en structuur in de week",
                "Huishoudelijke ondersteuning",
            ],
            Domain::Som => &[
                "Begeleiding bij een chronische ziekte",
                "Gezondheidsadvies en leefstijlbegeleiding",
            ],
        }
    }
}

/// How an organisation names the team that handles an involvement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Teams {
    /// "Team <area>" after the household's area.
    PerArea,
    /// One of these names.
    Named(&'static [&'static str]),
}

/// What one kind of organisation does.
#[derive(Debug)]
pub(crate) struct KindProfile {
    /// The `kind` in the registry.
    pub kind: &'static str,
    /// Domains of its involvements with children, and the minimum age for them.
    pub child: &'static [Domain],
    pub min_child_age: u32,
    /// Domains of its involvements with adults.
    pub adult: &'static [Domain],
    /// Relative chance, per organisation of this kind, of being involved with a child / adult.
    pub child_weight: u32,
    pub adult_weight: u32,
    /// Professionals' roles.
    pub roles: &'static [&'static str],
    pub teams: Teams,
}

/// Every kind the generator knows.
pub(crate) const PROFILES: &[KindProfile] = &[
    KindProfile {
        kind: "youth_health",
        child: &[Domain::Jgz, Domain::Jgz, Domain::Opv],
        min_child_age: 0,
        adult: &[Domain::Opv],
        child_weight: 14,
        adult_weight: 3,
        roles: &[
            "jeugdverpleegkundige",
            "jeugdarts",
            "ouder- en kindadviseur",
        ],
        teams: Teams::PerArea,
    },
    KindProfile {
        kind: "public_health",
        child: &[Domain::Jgz, Domain::Som],
        min_child_age: 0,
        adult: &[Domain::Som],
        child_weight: 3,
        adult_weight: 1,
        roles: &["sociaal verpleegkundige", "arts maatschappij en gezondheid"],
        teams: Teams::Named(&[
            "Team Vroegsignalering",
            "Team Bemoeizorg",
            "Team Infectieziekten",
        ]),
    },
    KindProfile {
        kind: "youth_care",
        child: &[Domain::Jh],
        min_child_age: 0,
        adult: &[],
        child_weight: 2,
        adult_weight: 0,
        roles: &["jeugdhulpverlener", "gezinsbehandelaar", "orthopedagoog"],
        teams: Teams::Named(&["Ambulant team", "Gezinsbehandeling", "Team Jonge Kind"]),
    },
    KindProfile {
        kind: "parenting_support",
        child: &[Domain::Opv],
        min_child_age: 0,
        adult: &[Domain::Opv],
        child_weight: 1,
        adult_weight: 2,
        roles: &["opvoedadviseur", "gezinscoach"],
        teams: Teams::Named(&["Opvoedadvies", "Gezinscoaching"]),
    },
    KindProfile {
        kind: "multi_problem_households",
        child: &[],
        min_child_age: 0,
        adult: &[Domain::Wmo, Domain::Opv],
        child_weight: 0,
        adult_weight: 5,
        roles: &["gezinsregisseur", "outreachend hulpverlener"],
        teams: Teams::PerArea,
    },
    KindProfile {
        kind: "debt_counselling",
        child: &[],
        min_child_age: 0,
        adult: &[Domain::Shv],
        child_weight: 0,
        adult_weight: 3,
        roles: &["schuldhulpverlener", "budgetcoach"],
        teams: Teams::Named(&["Schuldhulpverlening", "Vroegsignalering schulden"]),
    },
    KindProfile {
        kind: "social_support",
        child: &[],
        min_child_age: 0,
        adult: &[Domain::Wmo],
        child_weight: 0,
        adult_weight: 2,
        roles: &["ambulant begeleider", "wmo-consulent"],
        teams: Teams::Named(&["Ambulante ondersteuning", "Dagbesteding"]),
    },
    KindProfile {
        kind: "mental_health",
        child: &[Domain::Ggz],
        min_child_age: 6,
        adult: &[Domain::Ggz],
        child_weight: 1,
        adult_weight: 2,
        roles: &[
            "sociaal psychiatrisch verpleegkundige",
            "gz-psycholoog",
            "psychiater",
        ],
        teams: Teams::Named(&["FACT-team", "Basis-GGZ", "Team Angst en Stemming"]),
    },
    KindProfile {
        kind: "addiction_care",
        child: &[Domain::Vsl],
        min_child_age: 14,
        adult: &[Domain::Vsl],
        child_weight: 1,
        adult_weight: 1,
        roles: &["verslavingsconsulent", "verslavingsarts"],
        teams: Teams::Named(&["Ambulante verslavingszorg", "Team Jongeren en Middelen"]),
    },
    KindProfile {
        kind: "income_work",
        child: &[],
        min_child_age: 0,
        adult: &[Domain::Wi],
        child_weight: 0,
        adult_weight: 6,
        roles: &["klantmanager", "werkcoach", "inkomensconsulent"],
        teams: Teams::Named(&["Team Inkomen", "Team Werk", "Team Participatie"]),
    },
    KindProfile {
        kind: "education",
        child: &[Domain::Ond],
        min_child_age: 4,
        adult: &[],
        child_weight: 2,
        adult_weight: 0,
        roles: &[
            "intern begeleider",
            "schoolmaatschappelijk werker",
            "zorgcoördinator",
        ],
        teams: Teams::Named(&["Zorgteam", "Ondersteuningsteam"]),
    },
    KindProfile {
        kind: "housing",
        child: &[],
        min_child_age: 0,
        adult: &[Domain::Won],
        child_weight: 0,
        adult_weight: 2,
        roles: &["woonconsulent", "wijkbeheerder"],
        teams: Teams::Named(&["Team Wonen", "Team Huurincasso"]),
    },
    KindProfile {
        kind: "domestic_violence",
        child: &[Domain::Vei],
        min_child_age: 0,
        adult: &[Domain::Vei],
        child_weight: 1,
        adult_weight: 1,
        roles: &["casemanager", "aandachtsfunctionaris huiselijk geweld"],
        teams: Teams::Named(&["Team Onderzoek", "Team Monitoring"]),
    },
];

/// Organisations that serve only some districts (registry code, districts served).
/// Every other organisation serves the whole city.
pub(crate) const LOCAL_ORGANISATIONS: &[(&str, &[usize])] = &[
    ("OKC-CENTRUM", &[CENTRUM]),
    ("OKC-NOORD", &[NOORD]),
    ("OKC-NIEUW-WEST", &[NIEUW_WEST]),
    ("OKC-OOST", &[OOST]),
    ("OKC-WEST", &[WEST]),
    ("OKC-ZUID", &[ZUID]),
    ("OKC-ZUIDOOST", &[ZUIDOOST]),
    ("SD-NOORD", &[NOORD]),
    ("SD-WEST", &[WEST, NIEUW_WEST]),
    ("SD-OOST", &[CENTRUM, OOST, ZUID]),
    ("SD-ZUIDOOST", &[ZUIDOOST]),
];

/// A professional who can be the contact person of an involvement.
#[derive(Debug, Clone)]
pub(crate) struct Professional {
    pub name: String,
    pub role: &'static str,
    pub phone: String,
    pub email: String,
}

/// One organisation the generator uses.
#[derive(Debug)]
pub(crate) struct Org {
    /// The code okc-2 uses for it in the export.
    pub source_code: String,
    pub profile: &'static KindProfile,
    /// Bit set of districts served.
    pub districts: u8,
    pub staff: Vec<Professional>,
}

/// Age classes with their own lists of eligible organisations.
const AGE_BOUNDS: [u32; 4] = [4, 6, 14, 18];
const AGE_CLASSES: usize = AGE_BOUNDS.len() + 1;

fn age_class(age: u32) -> usize {
    AGE_BOUNDS.iter().take_while(|&&b| age >= b).count()
}

/// A representative age of each class (the lower bound).
fn class_age(class: usize) -> u32 {
    if class == 0 { 0 } else { AGE_BOUNDS[class - 1] }
}

/// Organisations with their staff, and per (district, age class) who may be involved.
#[derive(Debug)]
pub(crate) struct Catalogue {
    pub orgs: Vec<Org>,
    /// `eligible[district * AGE_CLASSES + class]` = (organisation index, cumulative weight).
    eligible: Vec<Vec<(usize, u32)>>,
}

/// Why the catalogue cannot be built from the registry.
pub(crate) type CatalogueError = String;

const STAFF_PER_ORG: usize = 10;

impl Catalogue {
    /// Builds the catalogue from registry TOML; staff are drawn from `rng`.
    pub(crate) fn build(
        registry_toml: &str,
        rng: &mut ChaCha8Rng,
    ) -> Result<Catalogue, CatalogueError> {
        let registry = Registry::parse(registry_toml, "deploy/organisations.toml")
            .map_err(|e| e.to_string())?;
        for (code, _) in LOCAL_ORGANISATIONS {
            if registry.resolve(SOURCE, code).is_none() {
                return Err(format!(
                    "organisation `{code}` is listed as a local organisation but is not in the registry"
                ));
            }
        }
        let all_districts: u8 = (1u8 << DISTRICTS.len()) - 1;
        let mut orgs = Vec::new();
        for org in registry.organisations() {
            let Some(source_code) = org.source_codes.get(SOURCE).and_then(|c| c.first()) else {
                continue;
            };
            let profile = PROFILES
                .iter()
                .find(|p| p.kind == org.kind)
                .ok_or_else(|| {
                    format!(
                        "organisation `{}` has kind `{}`, which the generator does not know",
                        org.code, org.kind
                    )
                })?;
            let districts = LOCAL_ORGANISATIONS
                .iter()
                .find(|(c, _)| *c == org.code)
                .map_or(all_districts, |(_, ds)| {
                    ds.iter().fold(0u8, |acc, &d| acc | (1u8 << d))
                });
            let domain = format!("{}.example", org.code.to_ascii_lowercase());
            let staff = (0..STAFF_PER_ORG)
                .map(|_| {
                    let initial = *INITIALS.choose(rng).unwrap_or(&'A');
                    let surname = *PROFESSIONAL_SURNAMES.choose(rng).unwrap_or(&"de Wit");
                    Professional {
                        name: professional_name(initial, surname),
                        role: profile.roles.choose(rng).copied().unwrap_or("hulpverlener"),
                        phone: format!("020-{}", rng.random_range(5_000_000..8_000_000u32)),
                        email: format!("{}@{domain}", email_local_part(initial, surname)),
                    }
                })
                .collect();
            orgs.push(Org {
                source_code: source_code.clone(),
                profile,
                districts,
                staff,
            });
        }
        if orgs.is_empty() {
            return Err(format!("no organisation has a code for source `{SOURCE}`"));
        }
        let mut eligible = Vec::with_capacity(DISTRICTS.len() * AGE_CLASSES);
        for district in 0..DISTRICTS.len() {
            for class in 0..AGE_CLASSES {
                let age = class_age(class);
                let mut total = 0u32;
                let mut list = Vec::new();
                for (i, o) in orgs.iter().enumerate() {
                    if o.districts & (1u8 << district) == 0 {
                        continue;
                    }
                    let w = weight(o.profile, age);
                    if w > 0 {
                        total += w;
                        list.push((i, total));
                    }
                }
                eligible.push(list);
            }
        }
        Ok(Catalogue { orgs, eligible })
    }

    /// Draws an organisation that may be involved with a person of `age` in `district`.
    pub(crate) fn draw_org(
        &self,
        rng: &mut ChaCha8Rng,
        district: usize,
        age: u32,
    ) -> Option<usize> {
        let list = self.eligible.get(district * AGE_CLASSES + age_class(age))?;
        let total = list.last()?.1;
        let x = rng.random_range(0..total);
        list.iter().find(|(_, cum)| x < *cum).map(|(i, _)| *i)
    }

    /// How many organisations may be involved with a person of `age` in `district`.
    pub(crate) fn eligible_count(&self, district: usize, age: u32) -> usize {
        self.eligible
            .get(district * AGE_CLASSES + age_class(age))
            .map_or(0, Vec::len)
    }
}

/// Chance weight of an organisation with `profile` being involved with a person of `age`.
fn weight(profile: &KindProfile, age: u32) -> u32 {
    if age >= 18 {
        if profile.adult.is_empty() {
            0
        } else {
            profile.adult_weight
        }
    } else if profile.child.is_empty() || age < profile.min_child_age {
        0
    } else {
        profile.child_weight
    }
}

/// The domains an organisation covers for a person of `age`.
pub(crate) fn domains_for(profile: &KindProfile, age: u32) -> &'static [Domain] {
    if age >= 18 {
        profile.adult
    } else {
        profile.child
    }
}

/// The name of a "Team <area>" team.
pub(crate) fn area_team(area: usize) -> String {
    format!("Team {}", AREAS.get(area).map_or("Amsterdam", |a| a.name))
}
