//! Fixed word lists of the generator: client and professional names, Amsterdam's areas.
//!
//! Client surnames are chosen so that leak scans can grep for them: each has at least five
//! letters and none occurs inside any other text the generator writes (professionals' names
//! and e-mail addresses, organisation names, teams, goals, roles, area names). The tests in
//! `tests.rs` check this against every fixed string the generator can emit.

/// Amsterdam's seven districts (stadsdelen), indexed by the `district` of an [`AREAS`] entry.
pub(crate) const DISTRICTS: [&str; 7] = [
    "Centrum",
    "Noord",
    "Nieuw-West",
    "Oost",
    "West",
    "Zuid",
    "Zuidoost",
];

pub(crate) const CENTRUM: usize = 0;
pub(crate) const NOORD: usize = 1;
pub(crate) const NIEUW_WEST: usize = 2;
pub(crate) const OOST: usize = 3;
pub(crate) const WEST: usize = 4;
pub(crate) const ZUID: usize = 5;
pub(crate) const ZUIDOOST: usize = 6;

/// One of Amsterdam's 22 areas (gebieden) and its district.
pub(crate) struct Area {
    pub name: &'static str,
    pub district: usize,
    /// Relative number of households living there.
    pub weight: u32,
}

const fn area(name: &'static str, district: usize, weight: u32) -> Area {
    Area {
        name,
        district,
        weight,
    }
}

/// The 22 areas (gebieden) with rough relative population sizes.
pub(crate) const AREAS: [Area; 22] = [
    area("Centrum-West", CENTRUM, 4),
    area("Centrum-Oost", CENTRUM, 4),
    area("Westerpark", WEST, 4),
    area("Bos en Lommer", WEST, 4),
    area("Oud-West/De Baarsjes", WEST, 7),
    area("Geuzenveld/Slotermeer", NIEUW_WEST, 5),
    area("Osdorp", NIEUW_WEST, 4),
    area("De Aker/Nieuw-Sloten", NIEUW_WEST, 3),
    area("Slotervaart", NIEUW_WEST, 5),
    area("Oud-Zuid", ZUID, 5),
    area("Buitenveldert/Zuidas", ZUID, 3),
    area("De Pijp/Rivierenbuurt", ZUID, 6),
    area("Oud-Oost", OOST, 4),
    area("Indische Buurt/Oostelijk Havengebied", OOST, 5),
    area("Watergraafsmeer", OOST, 4),
    area("IJburg/Zeeburgereiland", OOST, 4),
    area("Noord-West", NOORD, 4),
    area("Oud-Noord", NOORD, 3),
    area("Noord-Oost", NOORD, 3),
    area("Bijlmer-Centrum", ZUIDOOST, 3),
    area("Bijlmer-Oost", ZUIDOOST, 3),
    area("Gaasperdam", ZUIDOOST, 3),
];

/// Clients' surnames (with their prefix, as written in a name). Disjoint from
/// [`PROFESSIONAL_SURNAMES`] and not contained in any other emitted text.
pub(crate) const CLIENT_SURNAMES: &[&str] = &[
    "de Jong",
    "Jansen",
    "de Vries",
    "van den Berg",
    "Bakker",
    "Visser",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Peters",
    "Hendriks",
    "Kuipers",
    "Yilmaz",
    "El Amrani",
    "Ouali",
    "Bouzid",
    "Pinas",
    "Rijssel",
    "van Dijk",
    "Dekker",
    "Brouwer",
    "Janssen",
    "van Leeuwen",
    "Willemsen",
    "Vermeulen",
    "Huisman",
    "Postma",
    "Kramer",
    "van der Linden",
    "Schouten",
    "Boukhari",
    "Öztürk",
    "Demirci",
    "Çelik",
    "Aydoğan",
    "Ramdin",
    "Doekhie",
    "Sewdien",
    "Kartosen",
    "Asante",
    "Mensah",
    "Boateng",
    "Tahiri",
    "Benali",
    "Azzouzi",
    "Chaouch",
    "Ramsaran",
    "Wijngaarde",
    "Pengel",
    "Zeefuik",
    "Sordam",
    "Mohamud",
    "Abdullahi",
    "Nowak",
    "Kowalski",
    "Hoekstra",
    "Veenstra",
    "Koopmans",
    "Lachman",
];

/// Clients' first names, female.
pub(crate) const FIRST_NAMES_F: &[&str] = &[
    "Sanne", "Emma", "Julia", "Fleur", "Lotte", "Noor", "Sara", "Fatima", "Yasmina", "Aylin",
    "Zeynep", "Nadia", "Amira", "Priya", "Shanti", "Esmée", "Daphne", "Iris", "Maud", "Lieke",
    "Anouk", "Mila", "Sophie", "Hanna", "Ilse", "Nina", "Salma", "Imane", "Kimberly", "Naomi",
    "Gloria", "Akosua", "Chantal", "Mirjam", "Tessa", "Elif", "Khadija", "Roos", "Zoë", "Ayşe",
];

/// Clients' first names, male.
pub(crate) const FIRST_NAMES_M: &[&str] = &[
    "Daan", "Sem", "Lucas", "Finn", "Milan", "Thomas", "Bram", "Luuk", "Jesse", "Mohammed",
    "Yusuf", "Omar", "Ilias", "Ayoub", "Mehmet", "Emre", "Kerem", "Rajesh", "Sunil", "Dennis",
    "Kevin", "Jeroen", "Mark", "Stefan", "Ricardo", "Kwame", "Kofi", "Noah", "Levi", "Adam",
    "Ryan", "Bilal", "Hamza", "Gerrit", "Sven", "Anil", "Mustafa", "Jayden", "Romano", "Tim",
];

/// Professionals' surnames (ASCII only: they also form e-mail addresses). Disjoint from
/// [`CLIENT_SURNAMES`].
pub(crate) const PROFESSIONAL_SURNAMES: &[&str] = &[
    "de Wit",
    "van Beek",
    "Verhoeven",
    "Wouters",
    "Claassen",
    "Dijkstra",
    "Timmermans",
    "van Vliet",
    "Schipper",
    "Groen",
    "Lambers",
    "Stam",
    "Koning",
    "Brink",
    "Sedney",
    "Zwart",
    "Maas",
    "Molenaar",
    "Verbeek",
    "Hoogendoorn",
    "Bouwman",
    "Dirksen",
    "Haddaoui",
    "Essaidi",
    "Tjon",
    "Ramlal",
    "Chotkan",
    "Nijhof",
    "Kerkhof",
    "van Rooij",
    "Sluiter",
    "Vink",
    "Lelieveld",
    "Mertens",
    "Tahtah",
    "Bakir",
    "de Ruiter",
    "Blom",
    "Wijnands",
    "Hofstede",
    "van Essen",
    "Karaca",
];

/// Initials of professionals' first names.
pub(crate) const INITIALS: &[char] = &[
    'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'P', 'R', 'S', 'T', 'W',
    'Y',
];

/// The e-mail local part of a professional: `a.dewit` for "A. de Wit".
pub(crate) fn email_local_part(initial: char, surname: &str) -> String {
    let mut s = String::with_capacity(surname.len() + 2);
    s.push(initial.to_ascii_lowercase());
    s.push('.');
    s.extend(
        surname
            .chars()
            .filter(char::is_ascii_alphabetic)
            .map(|c| c.to_ascii_lowercase()),
    );
    s
}

/// The display name of a professional: "A. de Wit".
pub(crate) fn professional_name(initial: char, surname: &str) -> String {
    format!("{initial}. {surname}")
}
