//! The configuration file: `fedreg`'s settings and the peers it declares.
//!
//! A TOML file, named by `--config` or `FEDREG_CONFIG`, whose keys are the
//! long names of the command-line flags: the global options at the top
//! (`data-dir`, `database-url`...), `fedreg serve`'s options in a `[serve]`
//! table (`listen`, `max-delete-fraction`...), and one `[[peer]]` table per
//! peer that `serve` creates or updates at start ([`peers`]). A relative
//! path in the file is relative to the file's directory.
//!
//! This module reads the file and keeps the line of every value, so that
//! each error names its line and its key ([`ConfigError`]). How the
//! settings sit under the flags and the environment is
//! [`crate::cli::config`]'s business; how the peers are checked and
//! applied, [`peers`]'.

pub mod peers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use toml::{Spanned, Value};

/// A configuration file, read and parsed.
#[derive(Debug)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The global options: the keys before any table.
    pub options: Vec<Setting>,
    /// The options of `fedreg serve`: the `[serve]` table.
    pub serve: Vec<Setting>,
    /// The `[[peer]]` tables, in order.
    pub peers: Vec<peers::PeerEntry>,
    /// Where each line of the text starts, for line numbers.
    line_starts: Vec<usize>,
}

/// One option in the file: a flag's long name and its value as a command
/// line would spell it.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The key: the flag's long name, e.g. `max-delete-fraction`.
    pub key: String,
    /// The value as text: a string as it is, a number or a boolean as
    /// TOML writes it.
    pub value: String,
    /// The line of the value.
    pub line: usize,
}

/// What is wrong with one value of a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The line (from 1); `None` when the error is about the whole file.
    pub line: Option<usize>,
    /// The key, after its table: `data-dir`, `serve.listen`, `peer.url`;
    /// empty when the error is not about one key (a syntax error).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a configuration file, one error per value.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// The file.
    pub path: PathBuf,
    /// Its errors, in the order of their lines.
    pub errors: Vec<ConfigError>,
}

impl ConfigError {
    /// An error about `key` at `line`.
    pub fn new(
        line: impl Into<Option<usize>>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            line: line.into(),
            key: key.into(),
            message: message.to_string(),
        }
    }
}

impl ConfigErrors {
    /// The errors of the file at `path`, sorted by line; `Ok` when there are none.
    pub fn check(path: &Path, mut errors: Vec<ConfigError>) -> Result<(), ConfigErrors> {
        if errors.is_empty() {
            return Ok(());
        }
        errors.sort_by_key(|e| e.line);
        Err(ConfigErrors {
            path: path.to_owned(),
            errors,
        })
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        write!(f, "configuration file {path}:")?;
        for error in &self.errors {
            write!(f, "\n  {path}")?;
            if let Some(line) = error.line {
                write!(f, ":{line}")?;
            }
            if !error.key.is_empty() {
                write!(f, ": {}", error.key)?;
            }
            write!(f, ": {}", error.message)?;
        }
        Ok(())
    }
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_owned(),
            errors: vec![ConfigError::new(None, "", format!("cannot read it: {e}"))],
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses `text`, the content of the file at `path`: its TOML syntax,
    /// its tables and the shape of each value (the values themselves are
    /// checked by their users).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigErrors> {
        let mut file = ConfigFile {
            path: path.to_owned(),
            options: Vec::new(),
            serve: Vec::new(),
            peers: Vec::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(at, _)| at + 1))
                .collect(),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| file.line(&span));
            ConfigErrors {
                path: path.to_owned(),
                errors: vec![ConfigError::new(line, "", e.message().trim())],
            }
        })?;
        let mut errors = Vec::new();
        file.options = file.settings("", raw.options, &mut errors);
        file.serve = file.settings("serve.", raw.serve, &mut errors);
        file.peers = raw.peers;
        ConfigErrors::check(path, errors)?;
        Ok(file)
    }

    /// The line where `span` (byte offsets in the text) starts.
    pub fn line(&self, span: &std::ops::Range<usize>) -> usize {
        self.line_starts
            .partition_point(|&start| start <= span.start)
    }

    /// A path the file names: a relative one is relative to the file's
    /// directory (an empty one stays empty: it removes a setting).
    pub fn path(&self, named: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !named.as_os_str().is_empty() => dir.join(named),
            _ => named.to_owned(),
        }
    }

    /// The settings of one table, `section` naming it in errors (`serve.`),
    /// in the order of their lines; a value that is no string, number or
    /// boolean is an error.
    fn settings(
        &self,
        section: &str,
        values: impl IntoIterator<Item = (String, Spanned<Value>)>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<Setting> {
        let mut settings = Vec::new();
        for (key, value) in values {
            let line = self.line(&value.span());
            let value = match value.into_inner() {
                Value::String(text) => text,
                Value::Integer(n) => n.to_string(),
                Value::Float(x) => x.to_string(),
                Value::Boolean(yes) => yes.to_string(),
                other => {
                    errors.push(ConfigError::new(
                        line,
                        format!("{section}{key}"),
                        format!(
                            "expected a string, a number or a boolean, not {}",
                            other.type_str()
                        ),
                    ));
                    continue;
                }
            };
            settings.push(Setting { key, value, line });
        }
        settings.sort_by_key(|s| s.line);
        settings
    }
}

/// The file as TOML reads it: the top-level keys, the `[serve]` table and
/// the `[[peer]]` tables, each value with its place in the text.
#[derive(Default)]
struct RawFile {
    options: Vec<(String, Spanned<Value>)>,
    serve: BTreeMap<String, Spanned<Value>>,
    peers: Vec<peers::PeerEntry>,
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawFile, D::Error> {
        struct Tables;
        impl<'de> Visitor<'de> for Tables {
            type Value = RawFile;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFile, A::Error> {
                let mut file = RawFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "serve" => file.serve = map.next_value()?,
                        "peer" => file.peers = map.next_value()?,
                        _ => file.options.push((key, map.next_value()?)),
                    }
                }
                Ok(file)
            }
        }
        deserializer.deserialize_map(Tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigErrors> {
        ConfigFile::parse(Path::new("/etc/fedreg/fedreg.toml"), text)
    }

    #[test]
    fn tables_and_lines() {
        let file = parse(
            "data-dir = \"data\"\n\n[serve]\nlisten = \"127.0.0.1:1\"\nmax-delete-fraction = 0.25\n\
             require-client-cert = true\nstreams-per-token = 8\n\n[[peer]]\nname = \"plc2\"\n\
             url = \"http://127.0.0.1:2\"\n",
        )
        .unwrap();
        assert_eq!(
            file.options,
            vec![Setting {
                key: "data-dir".into(),
                value: "data".into(),
                line: 1
            }]
        );
        let serve: Vec<_> = file
            .serve
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str(), s.line))
            .collect();
        assert_eq!(
            serve,
            [
                ("listen", "127.0.0.1:1", 4),
                ("max-delete-fraction", "0.25", 5),
                ("require-client-cert", "true", 6),
                ("streams-per-token", "8", 7),
            ]
        );
        assert_eq!(file.peers.len(), 1);
        assert_eq!(file.line(&file.peers[0].url.span()), 11);
        assert_eq!(
            file.path(Path::new("tls/cert.pem")),
            Path::new("/etc/fedreg/tls/cert.pem")
        );
        assert_eq!(file.path(Path::new("/tmp/x")), Path::new("/tmp/x"));
        assert_eq!(file.path(Path::new("")), Path::new(""));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let errors = parse("[serve]\nlisten = [1]\nname = { a = 1 }\n")
            .unwrap_err()
            .errors;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(2));
        assert_eq!(errors[0].key, "serve.listen");
        assert!(errors[0].message.contains("array"), "{errors:?}");
        assert_eq!(errors[1].key, "serve.name");

        let syntax = parse("[serve]\nlisten = \n").unwrap_err();
        assert_eq!(syntax.errors[0].line, Some(2), "{syntax}");
        let unknown =
            parse("[[peer]]\nname = \"a\"\nurl = \"http://x:1\"\ntokn = 1\n").unwrap_err();
        assert_eq!(unknown.errors[0].line, Some(4), "{unknown}");
        assert!(unknown.to_string().contains("tokn"), "{unknown}");
        assert!(
            unknown.to_string().starts_with(
                "configuration file /etc/fedreg/fedreg.toml:\n  /etc/fedreg/fedreg.toml:4: "
            ),
            "{unknown}"
        );
    }
}
