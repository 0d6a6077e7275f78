//! Kind `fhir`: a FHIR R4 server's `EpisodeOfCare` resources with their patients, care
//! teams, practitioners, organisations and related persons, through the shared runner
//! (`schemas/formats/fhir-r4.md`).
//!
//! `location` is the FHIR service base URL. `[source.paging]` sets `_count` (at most 1000)
//! and the page-body cap; `[source.http]` the credentials; `[source.fhir]`
//! `organization_system` which `Organization.identifier` is mapped.

use matchpoint_connectors::fhir::{FhirConnector, FhirSettings};

use super::paged::{http_client, open_paged};
use super::{OpenContext, Opened};

/// Opens one run: a full search, or `_lastUpdated=gt<cursor>` for an incremental run.
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let s = cx.source;
    let settings = FhirSettings {
        base_url: s.location.clone(),
        page_size: s.paging.page_size,
        max_page_bytes: s.paging.max_page_bytes,
        organization_system: s.fhir.organization_system.clone(),
    };
    let connector = FhirConnector::new(http_client(s)?, settings).map_err(|e| e.to_string())?;
    Ok(Some(open_paged(cx, connector)))
}
