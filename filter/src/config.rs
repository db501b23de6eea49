//! The plugin configuration: raw ruleset bytes, or JSON carrying the ruleset
//! in base64 and optionally the workload (DESIGN §6).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;

use crate::json::{JsonError, Reader};

/// The workload whose sidecar runs the filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub labels: Vec<(String, String)>,
}

/// A configuration, before the ruleset is decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub ruleset: Vec<u8>,
    /// Named by the configuration; else it comes from node metadata.
    pub workload: Option<WorkloadSpec>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    Empty,
    Json(String),
    Base64(String),
    EmptyNamespace,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Empty => f.write_str("the plugin configuration is empty"),
            ConfigError::Json(e) => write!(f, "the JSON plugin configuration is invalid: {e}"),
            ConfigError::Base64(e) => write!(f, "\"ruleset\" is not valid base64: {e}"),
            ConfigError::EmptyNamespace => f.write_str("\"workload.namespace\" is empty"),
        }
    }
}

/// The JSON form, as read.
#[derive(Default)]
struct JsonConfig {
    ruleset: Option<String>,
    workload: Option<WorkloadSpec>,
}

fn read_json(text: &str) -> Result<JsonConfig, JsonError> {
    let mut r = Reader::new(text);
    let mut config = JsonConfig::default();
    r.object(|r, key| match key {
        "ruleset" => {
            config.ruleset = Some(r.string()?);
            Ok(())
        }
        "workload" => {
            if r.null() {
                return Ok(());
            }
            let mut spec = WorkloadSpec::default();
            let mut namespace = None;
            r.object(|r, key| match key {
                "namespace" => {
                    namespace = Some(r.string()?);
                    Ok(())
                }
                "labels" => {
                    if r.null() {
                        return Ok(());
                    }
                    r.object(|r, k| {
                        let v = r.string()?;
                        spec.labels.push((String::from(k), v));
                        Ok(())
                    })
                }
                _ => r.fail("unknown field in \"workload\" (expected namespace, labels)"),
            })?;
            match namespace {
                Some(ns) => spec.namespace = ns,
                None => return r.fail("\"workload\" has no \"namespace\""),
            }
            config.workload = Some(spec);
            Ok(())
        }
        // Room for settings of later versions.
        _ => r.skip(),
    })?;
    r.end()?;
    Ok(config)
}

/// Whether the configuration is JSON rather than raw ruleset bytes. Raw bytes
/// start with the format's label (`meshfence-ruleset`); JSON's first byte that
/// is not white space is `{`. Anything that is neither goes to the ruleset
/// decoder, which refuses a wrong label with a clear error.
pub fn is_json(raw: &[u8]) -> bool {
    !raw.starts_with(&meshfence_ruleset::format::LABEL)
        && raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

pub fn parse(raw: &[u8]) -> Result<Config, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::Empty);
    }
    if !is_json(raw) {
        return Ok(Config {
            ruleset: raw.to_vec(),
            workload: None,
        });
    }
    let text =
        core::str::from_utf8(raw).map_err(|_| ConfigError::Json(String::from("not UTF-8")))?;
    let json = read_json(text).map_err(|e| ConfigError::Json(alloc::format!("{e}")))?;
    let Some(ruleset_text) = json.ruleset else {
        return Err(ConfigError::Json(String::from("no \"ruleset\" field")));
    };
    // Accept base64 with or without padding, standard or URL-safe alphabet;
    // white space (a wrapped YAML scalar) is dropped first.
    let mut text = ruleset_text;
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        text.retain(|c| !c.is_ascii_whitespace());
    }
    let padded = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let standard = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, padded);
    let url = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, padded);
    let ruleset = standard
        .decode(&text)
        .or_else(|e| url.decode(&text).map_err(|_| e))
        .map_err(|e| ConfigError::Base64(alloc::format!("{e}")))?;
    if ruleset.is_empty() {
        return Err(ConfigError::Empty);
    }
    if json
        .workload
        .as_ref()
        .is_some_and(|w| w.namespace.is_empty())
    {
        return Err(ConfigError::EmptyNamespace);
    }
    Ok(Config {
        ruleset,
        workload: json.workload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_json() {
        let raw = parse(b"MFRS\x01").unwrap();
        assert_eq!(raw.ruleset, b"MFRS\x01");
        assert_eq!(raw.workload, None);
        let j = parse(br#" {"ruleset": "TUZSUwE=", "workload": {"namespace": "foo", "labels": {"app": "a"}}, "x": 1}"#)
            .unwrap();
        assert_eq!(j.ruleset, b"MFRS\x01");
        let w = j.workload.unwrap();
        assert_eq!(w.namespace, "foo");
        assert_eq!(w.labels, [("app".into(), "a".into())]);
        assert_eq!(
            parse(br#"{"ruleset": "TUZSUwE"}"#).unwrap().ruleset,
            b"MFRS\x01"
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(parse(b""), Err(ConfigError::Empty));
        assert!(matches!(parse(b"{"), Err(ConfigError::Json(_))));
        assert!(matches!(
            parse(br#"{"workload": {}}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            parse(br#"{"ruleset": "@@@"}"#),
            Err(ConfigError::Base64(_))
        ));
        assert!(matches!(
            parse(br#"{"ruleset": "TUZSUwE=", "workload": {"namespace": ""}}"#),
            Err(ConfigError::EmptyNamespace)
        ));
    }
}
