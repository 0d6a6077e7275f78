//! The demo's serving part: demo users of several organisations and roles, example persons
//! from the generated (fake) data, ready-to-paste curl lines, then the API until Ctrl-C.
//!
//! The generated BSNs printed here are fake (synthetic data); they go to this terminal only,
//! never to a log.

use std::collections::HashSet;

use anyhow::Context;
use matchpoint_hub::api::AppState;
use matchpoint_hub::config::Config;
use matchpoint_hub::sources::{self, OpenContext};
use matchpoint_hub::users::Role;
use matchpoint_schemas::Bsn;

use super::super::serve;
use super::super::users::add_user;

/// Valid BSNs from the first source's delivery (at most `max`), read on a blocking thread.
async fn sample_bsns(config: &Config, max: usize) -> anyhow::Result<Vec<String>> {
    let source = config
        .sources
        .first()
        .cloned()
        .context("the demo config has no source")?;
    tokio::task::spawn_blocking(move || {
        let path = source
            .mapping_spec
            .as_ref()
            .map(|m| m.fields.bsn.clone())
            .unwrap_or_else(|| "client/bsn".to_owned());
        let cx = OpenContext {
            source: &source,
            cursor: None,
            full: true,
            cancel: Default::default(),
            state: None,
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let Some(mut opened) = sources::open(&cx).map_err(anyhow::Error::msg)? else {
            return Ok(out);
        };
        while out.len() < max {
            match opened.stream.next_record() {
                Ok(Some(Ok(rec))) => {
                    if let Some(b) = rec.field(&path)
                        && Bsn::parse(b).is_ok()
                        && seen.insert(b.to_owned())
                    {
                        out.push(b.to_owned());
                    }
                }
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        Ok(out)
    })
    .await
    .context("reading the demo data")?
}

/// Sources that know a person well enough for the demo's example: the lookup then shows
/// many organisations (the seed document's Kuipers family is known to six).
const EXAMPLE_SOURCES: usize = 6;

/// Example persons: (bsn, involved organisation, uninvolved organisation). Prefers the
/// first person known to [`EXAMPLE_SOURCES`] sources, else the one known to the most.
async fn pick_examples(
    state: &AppState,
    bsns: &[String],
) -> anyhow::Result<Option<(String, String, String)>> {
    let orgs: Vec<String> = state
        .registry()
        .organisations()
        .iter()
        .map(|o| o.code.clone())
        .collect();
    let mut best: Option<(usize, (String, String, String))> = None;
    for text in bsns {
        let Ok(bsn) = Bsn::parse(text) else { continue };
        let person = state.index_pseudonym(&bsn);
        let mut persons = vec![person.clone()];
        persons.extend(
            state
                .store()
                .person_relations(person.clone())
                .await?
                .into_iter()
                .map(|r| r.other),
        );
        let rows = state.store().person_involvements(persons).await?;
        let Some(involved) = rows
            .iter()
            .find(|r| r.person == person && r.status == "active" && !r.sensitive)
            .map(|r| r.organisation_code.clone())
        else {
            continue;
        };
        let Some(outsider) = orgs
            .iter()
            .find(|o| !rows.iter().any(|r| &r.organisation_code == *o))
        else {
            continue;
        };
        let known = rows
            .iter()
            .filter(|r| r.person == person)
            .map(|r| r.source.as_str())
            .collect::<HashSet<_>>()
            .len();
        if best.as_ref().is_none_or(|(n, _)| known > *n) {
            best = Some((known, (text.clone(), involved, outsider.clone())));
        }
        if known >= EXAMPLE_SOURCES {
            break;
        }
    }
    Ok(best.map(|(_, example)| example))
}

/// Adds demo users, prints example requests and serves until Ctrl-C.
pub async fn serve(config: &Config, listen: &str, me: &str) -> anyhow::Result<()> {
    let state = serve::state(config).await?;
    let bsns = sample_bsns(config, 500).await?;
    let Some((bsn, involved, outsider)) = pick_examples(&state, &bsns).await? else {
        println!("\nNo suitable example person in the data; start the API with `{me} serve`.");
        return Ok(());
    };
    let privacy_org = outsider.clone();
    let mut tokens = Vec::new();
    for (name, role, org) in [
        (
            "Demo professional (involved)",
            Role::Professional,
            &involved,
        ),
        (
            "Demo professional (not involved)",
            Role::Professional,
            &outsider,
        ),
        ("Demo privacy officer", Role::PrivacyOfficer, &privacy_org),
        ("Demo operator", Role::Operator, &privacy_org),
    ] {
        let (id, token) = add_user(config, state.store(), name, role, org).await?;
        tokens.push((id, role, org.clone(), token));
    }
    let t = |i: usize| tokens[i].3.reveal().to_owned();
    let config_path = config.path.display();
    serve::run(state, listen, |addr| {
        let base = format!("http://{addr}");
        println!();
        println!("The lookup API is listening on {base} (Ctrl-C stops it).");
        println!("Demo users (tokens are shown once; `{me} users list --config {config_path}`):");
        for (id, role, org, _) in &tokens {
            println!("  user {id}: {role} at {org}");
        }
        println!();
        println!("The example person has the generated (fake) BSN {bsn}.");
        println!("# 1. Granted: a professional of {involved}, which is involved:");
        println!(
            "curl -s {base}/api/v1/lookups -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"bsn\":\"{bsn}\",\"purpose\":\"coordinating_care\"}}'",
            t(0)
        );
        println!("# 2. Refused (403, need to know): a professional of {outsider}, which is not:");
        println!(
            "curl -s {base}/api/v1/lookups -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"bsn\":\"{bsn}\",\"purpose\":\"coordinating_care\"}}'",
            t(1)
        );
        println!("# 3. Break the glass: the same, with a reason (answered, flagged, reviewed):");
        println!(
            "curl -s {base}/api/v1/lookups -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"bsn\":\"{bsn}\",\"purpose\":\"safety_assessment\",\"break_glass_reason\":{{\"code\":\"acute_safety\",\"justification\":\"Signs of acute danger reported at home visit\"}}}}'",
            t(1)
        );
        println!("# 4. The privacy officer's review queue, and the operator's data-quality report:");
        println!(
            "curl -s {base}/api/v1/audit/break-glass -H 'Authorization: Bearer {}'",
            t(2)
        );
        println!(
            "curl -s {base}/api/v1/sync/quality -H 'Authorization: Bearer {}'",
            t(3)
        );
        println!("# The API description: curl -s {base}/api/v1/openapi.json");
    })
    .await?;
    println!("Stopped.");
    Ok(())
}
