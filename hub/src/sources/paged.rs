//! Building the shared paged runner from a source's configuration, for every paged kind
//! (REST/JSON, SOAP, FHIR, SQL pull).
//!
//! A paged kind's `open` builds its [`PagedConnector`] and hands it to [`open_paged`]; the
//! retry policy, rate limit, page and byte limits and the cancel flag come from here
//! (`[source.paging]`, `[source.limits]`). HTTP kinds get their client with credentials from
//! [`http_client`] (`[source.http]`: secrets are read from the named environment variable or
//! file at the start of each run, never from the configuration file).

use std::time::Duration;

use matchpoint_connectors::http::{Auth, HttpClient, Secret};
use matchpoint_connectors::paged::PagedConnector;
use matchpoint_connectors::runner::{PagedRunner, RetryPolicy, RunnerConfig};

use super::{OpenContext, Opened};
use crate::config::{AuthKind, SourceConfig};

/// The runner settings of a source for this run.
pub fn runner_config(cx: &OpenContext<'_>) -> RunnerConfig {
    let p = &cx.source.paging;
    RunnerConfig {
        since: if cx.full {
            None
        } else {
            cx.cursor.map(str::to_owned)
        },
        retry: RetryPolicy {
            max_attempts: p.max_attempts,
            base_delay: Duration::from_millis(p.base_delay_ms),
            max_delay: Duration::from_millis(p.max_delay_ms),
            max_retry_after: Duration::from_millis(p.max_retry_after_ms),
        },
        min_interval: Duration::from_millis(p.min_interval_ms),
        max_pages: p.max_pages,
        max_bytes: cx.source.limits.max_bytes,
        cancel: cx.cancel.clone(),
        jitter_seed: None,
    }
}

/// Wraps a paged connector in the shared runner: the run's record stream.
pub fn open_paged<C: PagedConnector + 'static>(cx: &OpenContext<'_>, connector: C) -> Opened {
    Opened {
        stream: Box::new(PagedRunner::new(connector, runner_config(cx))),
    }
}

/// Reads one secret from an environment variable or a file; the message names where, never
/// what.
fn secret(
    source: &str,
    what: &str,
    env: Option<&String>,
    file: Option<&std::path::PathBuf>,
) -> Result<Secret, String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(&v)),
            _ => Err(format!(
                "source {source}: the {what} environment variable {var} is not set (http.{what}_env)"
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(&v)),
            Ok(_) => Err(format!(
                "source {source}: the {what} file {} is empty (http.{what}_file)",
                path.display()
            )),
            Err(e) => Err(format!(
                "source {source}: cannot read the {what} file {}: {e} (http.{what}_file)",
                path.display()
            )),
        };
    }
    Err(format!(
        "source {source}: no http.{what}_env or http.{what}_file is configured"
    ))
}

/// The credentials of an HTTP source.
pub fn auth(source: &SourceConfig) -> Result<Auth, String> {
    let h = &source.http;
    Ok(match h.auth {
        AuthKind::None => Auth::None,
        AuthKind::Bearer => Auth::Bearer(secret(
            &source.name,
            "token",
            h.token_env.as_ref(),
            h.token_file.as_ref(),
        )?),
        AuthKind::Basic => Auth::Basic {
            username: h.username.clone().unwrap_or_default(),
            password: secret(
                &source.name,
                "password",
                h.password_env.as_ref(),
                h.password_file.as_ref(),
            )?,
        },
    })
}

/// The HTTP client of a source: timeout, credentials and page-body cap.
pub fn http_client(source: &SourceConfig) -> Result<HttpClient, String> {
    HttpClient::new(
        &source.location,
        Duration::from_secs(source.limits.timeout_secs),
        auth(source)?,
        source.paging.max_page_bytes,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_a_file_or_env_and_never_show_in_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken-value\n").expect("write");
        let s = secret("okc-1", "token", None, Some(&file)).expect("secret");
        assert_eq!(s, Secret::new("t0ken-value"));
        assert!(!format!("{s:?}").contains("t0ken"));
        let missing = dir.path().join("nope");
        let err = secret("okc-1", "token", None, Some(&missing)).expect_err("missing");
        assert!(
            err.contains("http.token_file") && err.contains("nope"),
            "{err}"
        );
        std::fs::write(&file, "\n").expect("write");
        let err = secret("okc-1", "token", None, Some(&file)).expect_err("empty");
        assert!(err.contains("is empty"), "{err}");
        let var = "MATCHPOINT_TEST_UNSET_SECRET_VAR_3141";
        let err = secret("okc-1", "password", Some(&var.to_owned()), None).expect_err("unset");
        assert!(
            err.contains(var) && err.contains("http.password_env"),
            "{err}"
        );
    }
}
