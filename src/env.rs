//! Reading settings from environment variables: the one reader every part of dbmazz uses, and
//! the parsers that turn a variable into a typed value or a [`ConfigError`] naming it.
//!
//! Each part of the program parses its own section (the source and control plane in
//! [`crate::config`], the StarRocks sink in [`crate::starrocks::config`], provisioning in
//! [`crate::provision::config`]); they all read through [`Vars`] and fail the same way.

use std::collections::HashMap;
use std::net::IpAddr;

/// The variables of one run: the process environment, or a test's map. A variable that is
/// unset, empty or only spaces reads as unset; values are trimmed.
#[derive(Clone, Debug, Default)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    /// The process environment.
    pub fn from_env() -> Vars {
        Vars(std::env::vars().collect())
    }

    /// The value of `name`, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A comma-separated list (empty when unset), entries trimmed, empty ones dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl From<&HashMap<String, String>> for Vars {
    fn from(map: &HashMap<String, String>) -> Vars {
        Vars(map.clone())
    }
}

/// A variable has a value dbmazz cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong and what is expected (never the value of a secret).
    pub message: String,
}

impl ConfigError {
    /// An error for `var`.
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            var,
            message: message.into(),
        }
    }
}

/// Parses an IP address variable (default 127.0.0.1).
pub fn parse_ip(raw: Option<String>, var: &'static str) -> Result<IpAddr, ConfigError> {
    match raw {
        None => Ok(IpAddr::from([127, 0, 0, 1])),
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                var,
                format!("{v:?} is not an IP address; expected e.g. 127.0.0.1 or 0.0.0.0"),
            )
        }),
    }
}

/// Parses a variable that takes one of a few words; the first choice is the default.
pub fn parse_choice<T: Copy>(
    raw: Option<String>,
    var: &'static str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(raw) = raw else {
        return Ok(choices[0].1);
    };
    if let Some((_, v)) = choices.iter().find(|(word, _)| *word == raw) {
        return Ok(*v);
    }
    let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
    let expected = match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    };
    Err(ConfigError::new(
        var,
        format!("{raw:?} is not supported; expected {expected}"),
    ))
}

/// Parses a whole number within `min..=max` (`default` when unset).
pub fn parse_num(
    raw: Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError::new(
            var,
            format!("{raw:?} is not a whole number between {min} and {max}"),
        )),
    }
}
