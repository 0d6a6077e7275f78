//! Kind `soap`: a SOAP-style XML web service through the shared runner.

use super::{OpenContext, Opened};

/// Opens one run.
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    Err(format!(
        "source {}: kind soap is not available in this build yet",
        cx.source.name
    ))
}
