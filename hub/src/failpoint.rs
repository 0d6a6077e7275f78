//! Named pause points for crash-safety tests.
//!
//! When the environment variable `MATCHPOINT_PAUSE_AT` names a point (e.g. `publish:insert`,
//! or `stage:3` for the third staged batch), the process prints `paused at <point>` on stderr
//! when it gets there and then blocks until its standard input closes. The crash test waits
//! for that line and kills the process with SIGKILL, so every kill lands at a known phase.
//! Without the variable, [`hit`] costs one comparison.

use std::io::Read;
use std::sync::OnceLock;

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            std::env::var("MATCHPOINT_PAUSE_AT")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Marks that the process reached `point`; pauses there when asked to.
pub fn hit(point: &str) {
    if target() == Some(point) {
        eprintln!("paused at {point}");
        let mut sink = Vec::new();
        // Blocks until the test closes stdin or kills the process.
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
}
