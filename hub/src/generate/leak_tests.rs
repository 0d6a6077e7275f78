//! Tests that client surnames cannot be confused with any other text the generator writes
//! (so leak scans can grep for them), and that every organisation code resolves.

use std::collections::BTreeSet;

use matchpoint_schemas::Registry;

use super::catalogue::{Domain, PROFILES, Teams, area_team};
use super::names::{
    AREAS, CLIENT_SURNAMES, DISTRICTS, INITIALS, PROFESSIONAL_SURNAMES, email_local_part,
    professional_name,
};
use super::population::{Status, UNKNOWN_DOMAIN_CODES};
use super::tests::{MAPPING, attr, dossiers, read, run};
use super::{ORGANISATIONS_TOML, client_surnames, okc2_export_path};

/// Every fixed text the generator can write outside the client element.
fn emitted_fixed_texts() -> Vec<String> {
    let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
    let mut texts: Vec<String> = Vec::new();
    texts.extend(AREAS.iter().map(|a| a.name.to_owned()));
    texts.extend((0..AREAS.len()).map(area_team));
    texts.extend(DISTRICTS.iter().map(|d| (*d).to_owned()));
    for p in PROFILES {
        texts.push(p.kind.to_owned());
        texts.extend(p.roles.iter().map(|r| (*r).to_owned()));
        if let Teams::Named(names) = p.teams {
            texts.extend(names.iter().map(|n| (*n).to_owned()));
        }
    }
    for d in Domain::ALL {
        texts.push(d.code().to_owned());
        texts.extend(d.goals().iter().map(|g| (*g).to_owned()));
    }
    texts.extend(UNKNOWN_DOMAIN_CODES.iter().map(|c| (*c).to_owned()));
    for s in [Status::Registered, Status::Active, Status::Ended] {
        texts.push(s.code().to_owned());
    }
    texts.extend(["ja", "nee", "ouder", "kind", "huisgenoot"].map(str::to_owned));
    let mut domains = Vec::new();
    for org in registry.organisations() {
        texts.push(org.code.clone());
        texts.push(org.name.clone());
        texts.push(org.kind.clone());
        texts.extend(org.general_contact.clone());
        texts.extend(org.source_codes.values().flatten().cloned());
        domains.push(format!("{}.example", org.code.to_ascii_lowercase()));
    }
    for &i in INITIALS {
        for s in PROFESSIONAL_SURNAMES {
            texts.push(professional_name(i, s));
            for d in &domains {
                texts.push(format!("{}@{d}", email_local_part(i, s)));
            }
        }
    }
    // The registry and mapping files as a whole (comments included) end up in the hub too.
    texts.push(ORGANISATIONS_TOML.to_owned());
    texts.push(MAPPING.to_owned());
    texts
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[test]
fn client_surnames_are_leak_scannable() {
    let clients: BTreeSet<String> = CLIENT_SURNAMES.iter().map(|s| s.to_lowercase()).collect();
    assert_eq!(
        clients.len(),
        CLIENT_SURNAMES.len(),
        "client surnames are unique"
    );
    assert_eq!(client_surnames(), CLIENT_SURNAMES);
    for s in CLIENT_SURNAMES {
        let letters = s.chars().filter(|c| c.is_alphabetic()).count();
        assert!(
            letters >= 5,
            "client surname {s:?} is shorter than 5 letters"
        );
    }
    for p in PROFESSIONAL_SURNAMES {
        assert!(
            p.is_ascii(),
            "professional surnames form e-mail addresses: {p}"
        );
        assert!(
            !clients.contains(&p.to_lowercase()),
            "{p} is both a client and a professional surname"
        );
    }
    let texts: Vec<(String, String, String)> = emitted_fixed_texts()
        .into_iter()
        .map(|t| (t.to_lowercase(), squash(&t), t))
        .collect();
    let mut leaks = BTreeSet::new();
    for s in CLIENT_SURNAMES {
        let plain = s.to_lowercase();
        let squashed = squash(s);
        for (lower, squashed_text, t) in &texts {
            if lower.contains(&plain) || squashed_text.contains(&squashed) {
                leaks.insert(format!(
                    "{s:?} in {:?}",
                    t.chars().take(60).collect::<String>()
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "client surnames occur in emitted text: {leaks:#?}"
    );
}

#[test]
fn no_client_surname_appears_outside_the_client_element() {
    let (dir, _) = run(1_500, 21, 0.05);
    let xml = read(&okc2_export_path(&dir.path().join("out")));
    let mut seen_in_client = 0;
    for (id, body) in dossiers(&xml) {
        let start = body.find("<client>").expect("client");
        let end = body.find("</client>").expect("client end");
        let client = &body[start..end];
        let rest = format!("{}{}", &body[..start], &body[end..]).to_lowercase();
        for s in CLIENT_SURNAMES {
            if client.contains(s) {
                seen_in_client += 1;
            }
            assert!(
                !rest.contains(&s.to_lowercase()),
                "{id}: client surname {s} outside client"
            );
        }
    }
    assert!(seen_in_client > 0);
}

#[test]
fn the_registry_parses_and_every_emitted_code_resolves() {
    let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
    let n = registry.organisations().len();
    assert!((25..=40).contains(&n), "{n} organisations");
    for org in registry.organisations() {
        assert!(
            PROFILES.iter().any(|p| p.kind == org.kind),
            "{}: kind {} unknown to the generator",
            org.code,
            org.kind
        );
    }
    let (dir, _) = run(2_000, 4, 0.0);
    let xml = read(&okc2_export_path(&dir.path().join("out")));
    let mut used = BTreeSet::new();
    for (id, body) in dossiers(&xml) {
        let code = attr(body, "code").expect("organisatie code");
        assert!(
            registry.resolve("okc-2", code).is_some(),
            "{id}: {code} does not resolve"
        );
        used.insert(code.to_owned());
    }
    assert!(used.len() >= 25, "most organisations are used: {used:?}");
}
