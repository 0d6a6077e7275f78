//! Kind `rest_json`: a paginated REST/JSON API through the shared runner.

use matchpoint_connectors::json_flatten::FlattenLimits;
use matchpoint_connectors::rest_json::{RestJsonConnector, RestJsonFormat};

use super::paged::{http_client, open_paged};
use super::{OpenContext, Opened};

/// Opens one run: the first page asks for changes since the committed cursor (incremental)
/// or for everything (full).
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let s = cx.source;
    let defaults = RestJsonFormat::default();
    let h = &s.http;
    let format = RestJsonFormat {
        since_param: h.since_param.clone().unwrap_or(defaults.since_param),
        page_size_param: h
            .page_size_param
            .clone()
            .unwrap_or(defaults.page_size_param),
        page_size: s.paging.page_size,
        id_field: h.id_field.clone().unwrap_or(defaults.id_field),
        cursor_field: h.cursor_field.clone().unwrap_or(defaults.cursor_field),
        flatten: FlattenLimits {
            max_depth: s.limits.max_depth,
            ..FlattenLimits::default()
        },
        ..defaults
    };
    let client = http_client(s)?;
    Ok(Some(open_paged(
        cx,
        RestJsonConnector::new(client, &s.location, format),
    )))
}
