//! The operator's configuration of a plugin.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::str::FromStr;

/// The `config = { … }` table of a plugin, flattened to keys and values (nested keys
/// joined with dots, array elements numbered, values without quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    /// A configuration from pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Config {
        Config { pairs }
    }

    /// A configuration from string pairs (for tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Config {
        Config {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }

    /// `key` parsed as `T`, if present; an error naming the key and the value if it does
    /// not parse.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                format!(
                    "config key `{key}`: cannot use {v:?} (expected {})",
                    core::any::type_name::<T>()
                )
            }),
        }
    }

    /// `key` parsed as `T`, or `default` if absent.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// Refuses keys outside `known`, so that a typo is an error, not a silent default.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), String> {
        for k in self.keys() {
            if !known.contains(&k) {
                return Err(format!(
                    "unknown config key `{k}` (known: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }
}
