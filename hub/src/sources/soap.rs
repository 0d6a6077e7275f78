//! Kind `soap`: a SOAP-style XML web service through the shared runner.

use matchpoint_connectors::soap::{SoapConnector, SoapFormat};

use super::paged::{http_client, open_paged};
use super::{OpenContext, Opened};

/// Opens one run: the first envelope carries the committed cursor as `since` (incremental)
/// or none (full).
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let s = cx.source;
    let defaults = SoapFormat::default();
    let format = SoapFormat {
        soap_action: s
            .http
            .soap_action
            .clone()
            .unwrap_or(defaults.soap_action.clone()),
        page_size: s.paging.page_size,
        max_depth: s.limits.max_depth,
        max_element_bytes: s.limits.max_element_bytes,
        max_page_bytes: s.paging.max_page_bytes,
        ..defaults
    };
    let client = http_client(s)?;
    Ok(Some(open_paged(
        cx,
        SoapConnector::new(client, &s.location, format),
    )))
}
