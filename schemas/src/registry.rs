//! The shared organisation registry: one code per organisation, and each source's own codes
//! mapped onto it.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// One organisation of the social domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// The registry code, used everywhere in the index.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Kind of organisation, e.g. `youth_health`, `debt_counselling`.
    pub kind: String,
    /// General contact (phone or e-mail) shown instead of a named professional where needed.
    #[serde(default)]
    pub general_contact: Option<String>,
    /// Codes each source uses for this organisation, by source name.
    #[serde(default)]
    pub source_codes: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    organisation: Vec<Organisation>,
}

/// What can go wrong loading the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// File unreadable.
    #[error("cannot read organisation registry {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("organisation registry {path} is invalid: {message}")]
    Parse { path: String, message: String },
    /// Two entries claim one code.
    #[error("organisation registry {path}: {what} `{code}` is defined twice")]
    Duplicate {
        path: String,
        what: &'static str,
        code: String,
    },
}

/// The loaded registry with lookup by registry code and by (source, source code).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    orgs: Vec<Organisation>,
    by_code: HashMap<String, usize>,
    by_source: HashMap<(String, String), usize>,
}

impl Registry {
    /// Loads and checks a registry TOML file (`[[organisation]]` tables).
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses registry TOML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut reg = Registry::default();
        for (i, org) in file.organisation.into_iter().enumerate() {
            if reg.by_code.insert(org.code.clone(), i).is_some() {
                return Err(RegistryError::Duplicate {
                    path: origin.to_owned(),
                    what: "organisation code",
                    code: org.code,
                });
            }
            for (source, codes) in &org.source_codes {
                for c in codes {
                    if reg
                        .by_source
                        .insert((source.clone(), c.clone()), i)
                        .is_some()
                    {
                        return Err(RegistryError::Duplicate {
                            path: origin.to_owned(),
                            what: "source code",
                            code: format!("{source}:{c}"),
                        });
                    }
                }
            }
            reg.orgs.push(org);
        }
        Ok(reg)
    }

    /// Resolves a source's organisation code: first the source's own codes, then registry codes.
    pub fn resolve(&self, source: &str, code: &str) -> Option<&Organisation> {
        self.by_source
            .get(&(source.to_owned(), code.to_owned()))
            .or_else(|| self.by_code.get(code))
            .map(|&i| &self.orgs[i])
    }

    /// Every organisation, in file order.
    pub fn organisations(&self) -> &[Organisation] {
        &self.orgs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_codes_resolve_to_the_registry_code() {
        let reg = Registry::parse(
            r#"
[[organisation]]
code = "GGD-AMS"
name = "GGD Amsterdam"
kind = "public_health"
source_codes = { okc-2 = ["GGD"] }
"#,
            "test",
        )
        .expect("parse");
        assert_eq!(
            reg.resolve("okc-2", "GGD").map(|o| o.code.as_str()),
            Some("GGD-AMS")
        );
        assert_eq!(
            reg.resolve("okc-3", "GGD-AMS").map(|o| o.code.as_str()),
            Some("GGD-AMS")
        );
        assert!(reg.resolve("okc-3", "GGD").is_none());
    }
}
