//! The peers a configuration file declares, and how `serve` applies them.
//!
//! Each `[[peer]]` table takes the options of `fedreg peer add`, by the same
//! names: `name` and `url`, and `outbound-token-file`, `peer-cacert`,
//! `client-identity`, `shortname`, `hrn-root`, `refresh-interval`,
//! `max-delete-fraction` and `follow`. The token is read from its file, so
//! that the configuration file holds no secret.
//!
//! [`declare`] reads the files a table names and checks every value with the
//! admin API's validators, collecting every error; [`apply`], at each start
//! of `serve`, creates the peers that do not exist and updates the settings
//! that differ, through the admin API's operations ([`crate::registry::peers`]).
//! A key left out of a table leaves that setting as it is (on a new peer,
//! the default of `peer add`); peers the file does not name are left alone.
//! Applying the same file twice changes nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ConfigErrors, ConfigFile};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::peers::{self, Following};
use crate::registry::validate;
use crate::store::Store;
use crate::store::peers::PeerRow;

/// A `[[peer]]` table as the file spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerEntry {
    /// The peer's name: the key that ties the table to a peer record.
    pub name: Spanned<String>,
    /// The peer's gRPC URL.
    pub url: Spanned<String>,
    /// File whose first line is the token the peer issued to this registry.
    pub outbound_token_file: Option<Spanned<PathBuf>>,
    /// PEM file of the CA that verifies the peer's certificate; "" removes it.
    pub peer_cacert: Option<Spanned<PathBuf>>,
    /// Identity the peer's calls must prove with a client certificate; ""
    /// removes it.
    pub client_identity: Option<Spanned<String>>,
    /// Short name.
    pub shortname: Option<Spanned<String>>,
    /// Root of the peer's human-readable names.
    pub hrn_root: Option<Spanned<String>>,
    /// Seconds between scheduled refreshes; 0 for none.
    pub refresh_interval: Option<Spanned<i64>>,
    /// Largest fraction of the peer's cache a refresh may delete unforced.
    pub max_delete_fraction: Option<Spanned<f64>>,
    /// Whether to follow the peer.
    pub follow: Option<Spanned<bool>>,
}

/// A declared peer, its files read and its values checked; `None` leaves
/// a setting as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredPeer {
    /// The peer's name.
    pub name: String,
    /// The peer's URL, normalized.
    pub url: String,
    /// The outbound token read from `outbound-token-file`.
    pub outbound_token: Option<String>,
    /// The CA certificate's PEM text; `Some(None)` removes it.
    pub cacert: Option<Option<String>>,
    /// The client identity; `Some(None)` removes it.
    pub client_identity: Option<Option<String>>,
    /// Short name.
    pub shortname: Option<String>,
    /// Root of human-readable names.
    pub hrn_root: Option<String>,
    /// Seconds between scheduled refreshes.
    pub refresh_interval: Option<i64>,
    /// Mass-delete threshold.
    pub max_delete_fraction: Option<f64>,
    /// Whether to follow the peer.
    pub follow: Option<bool>,
}

/// What applying a declared peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Applied {
    /// The peer did not exist: it was created.
    Created,
    /// These settings (the file's keys) differed and were changed.
    Updated(Vec<&'static str>),
    /// The record already said what the file says.
    Unchanged,
}

/// The first line of the token file at `path`: the outbound token.
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(
            "outbound_token_file",
            path.display(),
            format!("cannot read it: {e}"),
        )
    })?;
    match text.lines().next().map(str::trim) {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(Error::invalid(
            "outbound_token_file",
            path.display(),
            "its first line is empty: it must hold the token",
        )),
    }
}

/// The PEM text of the CA certificate file at `path`; "" for an empty path
/// (which removes the certificate).
pub fn read_cacert_file(path: &Path) -> Result<String> {
    if path.as_os_str().is_empty() {
        return Ok(String::new());
    }
    std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(
            "peer_cacert",
            path.display(),
            format!("cannot read it: {e}"),
        )
    })
}

/// The peers `file` declares, checked as the admin API checks a new peer
/// (and their names unique in the file), or every error found.
pub fn declare(file: &ConfigFile) -> std::result::Result<Vec<DeclaredPeer>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    let mut declared = Vec::new();
    for entry in &file.peers {
        let mut check = Checker {
            file,
            errors: &mut errors,
        };
        let name = check.value("name", &entry.name, |n| validate::peername(n));
        let url = check.value("url", &entry.url, |u| validate::peer_url(u));
        let outbound_token =
            check.optional("outbound-token-file", &entry.outbound_token_file, |path| {
                validate::outbound_token(&read_token_file(&file.path(path))?)
            });
        let cacert = check.optional("peer-cacert", &entry.peer_cacert, |path| {
            validate::cacert(&read_cacert_file(&file.path(path))?)
        });
        let client_identity = check.optional("client-identity", &entry.client_identity, |v| {
            validate::client_identity(v)
        });
        let shortname = check.optional("shortname", &entry.shortname, |v| validate::shortname(v));
        let hrn_root = check.optional("hrn-root", &entry.hrn_root, |v| validate::hrn_root(v));
        let refresh_interval = check.optional("refresh-interval", &entry.refresh_interval, |v| {
            validate::refresh_interval(*v)
        });
        let max_delete_fraction =
            check.optional("max-delete-fraction", &entry.max_delete_fraction, |v| {
                validate::max_delete_fraction(*v)
            });
        // Every value is checked above, so that each error is reported.
        let checked = (|| {
            Some(DeclaredPeer {
                name: name?,
                url: url?,
                outbound_token: outbound_token?.flatten(),
                cacert: cacert?,
                client_identity: client_identity?,
                shortname: shortname?,
                hrn_root: hrn_root?,
                refresh_interval: refresh_interval?,
                max_delete_fraction: max_delete_fraction?,
                follow: entry.follow.as_ref().map(|f| *f.get_ref()),
            })
        })();
        let Some(peer) = checked else {
            continue;
        };
        if !names.insert(peer.name.clone()) {
            errors.push(ConfigError::new(
                file.line(&entry.name.span()),
                "peer.name",
                format!("peer {:?} is declared twice", peer.name),
            ));
            continue;
        }
        declared.push(peer);
    }
    ConfigErrors::check(&file.path, errors)?;
    Ok(declared)
}

/// Checks the values of one `[[peer]]` table, noting each error with its
/// line and key.
struct Checker<'a> {
    file: &'a ConfigFile,
    errors: &'a mut Vec<ConfigError>,
}

impl Checker<'_> {
    /// The checked value of `key`; `None` (and an error noted) when it is
    /// not valid.
    fn value<T, U>(
        &mut self,
        key: &str,
        value: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<U>,
    ) -> Option<U> {
        check(value.get_ref())
            .map_err(|e| {
                self.errors.push(ConfigError::new(
                    self.file.line(&value.span()),
                    format!("peer.{key}"),
                    e,
                ))
            })
            .ok()
    }

    /// The checked value of an optional `key`: `Some(None)` when the table
    /// leaves it out, `None` when it is not valid.
    fn optional<T, U>(
        &mut self,
        key: &str,
        value: &Option<Spanned<T>>,
        check: impl FnOnce(&T) -> Result<U>,
    ) -> Option<Option<U>> {
        match value {
            None => Some(None),
            Some(value) => self.value(key, value, check).map(Some),
        }
    }
}

impl DeclaredPeer {
    /// The request that creates this peer.
    fn create_request(&self) -> pb::CreatePeerRequest {
        pb::CreatePeerRequest {
            peername: self.name.clone(),
            peer_url: self.url.clone(),
            cacert: self.cacert.clone().flatten().unwrap_or_default(),
            outbound_token: self.outbound_token.clone().unwrap_or_default(),
            client_identity: self.client_identity.clone().flatten().unwrap_or_default(),
            shortname: self.shortname.clone().unwrap_or_default(),
            hrn_root: self.hrn_root.clone().unwrap_or_default(),
            refresh_interval_seconds: self.refresh_interval.unwrap_or(0),
            max_delete_fraction: self.max_delete_fraction,
            follow: self.follow.unwrap_or(false),
        }
    }

    /// The request that brings `row` to what the file declares, and the
    /// keys whose settings it changes (none: nothing to do).
    fn update_request(&self, row: &PeerRow) -> (pb::UpdatePeerRequest, Vec<&'static str>) {
        let mut changed = Vec::new();
        let request = pb::UpdatePeerRequest {
            peer_id: row.peer_id,
            peername: None,
            peer_url: differing(&mut changed, "url", Some(&self.url), &row.peer_url),
            outbound_token: differing(
                &mut changed,
                "outbound-token-file",
                self.outbound_token.clone().map(Some).as_ref(),
                &row.outbound_token,
            )
            .map(Option::unwrap_or_default),
            cacert: differing(
                &mut changed,
                "peer-cacert",
                self.cacert.as_ref(),
                &row.cacert,
            )
            .map(Option::unwrap_or_default),
            client_identity: differing(
                &mut changed,
                "client-identity",
                self.client_identity.as_ref(),
                &row.client_identity,
            )
            .map(Option::unwrap_or_default),
            shortname: differing(
                &mut changed,
                "shortname",
                self.shortname.as_ref(),
                &row.shortname,
            ),
            hrn_root: differing(
                &mut changed,
                "hrn-root",
                self.hrn_root.as_ref(),
                &row.hrn_root,
            ),
            refresh_interval_seconds: differing(
                &mut changed,
                "refresh-interval",
                self.refresh_interval.as_ref(),
                &row.refresh_interval_seconds,
            ),
            max_delete_fraction: differing(
                &mut changed,
                "max-delete-fraction",
                self.max_delete_fraction.map(Some).as_ref(),
                &row.max_delete_fraction,
            )
            .flatten(),
            follow: differing(&mut changed, "follow", self.follow.as_ref(), &row.follow),
        };
        (request, changed)
    }
}

/// `wanted` when the file sets it and it differs from `stored`, noting
/// `key` in `changed`.
fn differing<T: PartialEq + Clone>(
    changed: &mut Vec<&'static str>,
    key: &'static str,
    wanted: Option<&T>,
    stored: &T,
) -> Option<T> {
    let wanted = wanted.filter(|wanted| *wanted != stored)?;
    changed.push(key);
    Some(wanted.clone())
}

/// Creates or updates each declared peer, logging what changed.
pub async fn apply(
    store: &Store,
    followers: &dyn Following,
    declared: &[DeclaredPeer],
) -> Result<()> {
    for peer in declared {
        match apply_one(store, followers, peer).await? {
            Applied::Created => {
                tracing::info!(peer = %peer.name, "peer created from the configuration file")
            }
            Applied::Updated(keys) => tracing::info!(
                peer = %peer.name,
                changed = %keys.join(", "),
                "peer updated from the configuration file"
            ),
            Applied::Unchanged => {
                tracing::debug!(peer = %peer.name, "peer as the configuration file declares it")
            }
        }
    }
    Ok(())
}

/// Creates `peer`, or updates the settings of its record that differ.
async fn apply_one(
    store: &Store,
    followers: &dyn Following,
    peer: &DeclaredPeer,
) -> Result<Applied> {
    // Twice at most: another process on the same database may create the
    // peer between our read and our create; then it is updated instead.
    for _ in 0..2 {
        let stored = {
            let mut conn = store.read().await?;
            peers::named(&mut conn, &peer.name).await?
        };
        let Some(row) = stored else {
            match peers::create(store, followers, peer.create_request()).await {
                Ok(_) => return Ok(Applied::Created),
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        let (request, changed) = peer.update_request(&row);
        if changed.is_empty() {
            return Ok(Applied::Unchanged);
        }
        peers::update(store, followers, request).await?;
        return Ok(Applied::Updated(changed));
    }
    Err(Error::Aborted(format!(
        "peer {:?} was created and removed by another process while being declared",
        peer.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> std::result::Result<Vec<DeclaredPeer>, ConfigErrors> {
        declare(&ConfigFile::parse(&dir.join("fedreg.toml"), text).unwrap())
    }

    #[test]
    fn declared_values_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plc2.token"), "s3cret\nignored\n").unwrap();
        std::fs::write(
            dir.path().join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let peers = file(
            dir.path(),
            "[[peer]]\nname = \"plc2\"\nurl = \"https://plc2.example.org:443/\"\n\
             outbound-token-file = \"plc2.token\"\npeer-cacert = \"ca.pem\"\nfollow = true\n\
             [[peer]]\nname = \"plc3\"\nurl = \"http://127.0.0.1:3\"\nclient-identity = \"\"\n\
             refresh-interval = 300\nmax-delete-fraction = 0.1\n",
        )
        .unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].url, "https://plc2.example.org:443");
        assert_eq!(peers[0].outbound_token.as_deref(), Some("s3cret"));
        assert!(
            peers[0]
                .cacert
                .clone()
                .flatten()
                .unwrap()
                .ends_with("CERTIFICATE-----")
        );
        assert_eq!(peers[0].follow, Some(true));
        assert_eq!(peers[0].refresh_interval, None);
        assert_eq!(peers[1].client_identity, Some(None));
        assert_eq!(peers[1].cacert, None);
        assert_eq!(peers[1].refresh_interval, Some(300));
        assert_eq!(peers[1].max_delete_fraction, Some(0.1));
    }

    #[test]
    fn every_bad_value_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let errors = file(
            dir.path(),
            "[[peer]]\nname = \"plc 2\"\nurl = \"ftp://x\"\noutbound-token-file = \"missing\"\n\
             refresh-interval = 5\n[[peer]]\nname = \"a\"\nurl = \"http://a:1\"\n\
             [[peer]]\nname = \"a\"\nurl = \"http://a:2\"\nmax-delete-fraction = 2.0\n",
        )
        .unwrap_err()
        .errors;
        let found: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "peer.name"),
                (Some(3), "peer.url"),
                (Some(4), "peer.outbound-token-file"),
                (Some(5), "peer.refresh-interval"),
                (Some(12), "peer.max-delete-fraction"),
            ],
            "{errors:#?}"
        );
        assert!(errors[2].message.contains("missing"), "{errors:#?}");

        let twice = file(
            dir.path(),
            "[[peer]]\nname = \"a\"\nurl = \"http://a:1\"\n[[peer]]\nname = \"a\"\nurl = \"http://a:2\"\n",
        )
        .unwrap_err()
        .errors;
        assert_eq!(twice.len(), 1);
        assert_eq!(
            (twice[0].line, twice[0].key.as_str()),
            (Some(5), "peer.name")
        );
    }

    #[test]
    fn updates_carry_only_what_differs() {
        let declared = DeclaredPeer {
            name: "plc2".into(),
            url: "http://127.0.0.1:2".into(),
            outbound_token: Some("new".into()),
            cacert: Some(None),
            client_identity: None,
            shortname: None,
            hrn_root: None,
            refresh_interval: Some(0),
            max_delete_fraction: Some(0.5),
            follow: Some(true),
        };
        let stored = PeerRow {
            peer_id: 7,
            peername: "plc2".into(),
            peer_url: "http://127.0.0.1:2".into(),
            cacert: Some("pem".into()),
            outbound_token: Some("old".into()),
            shortname: "p2".into(),
            hrn_root: String::new(),
            refresh_interval_seconds: 0,
            max_delete_fraction: Some(0.5),
            date_created: 0,
            last_refresh_time: None,
            last_refresh_outcome: 0,
            last_refresh_report: None,
            last_success_time: None,
            checkpoint_epoch: None,
            checkpoint_revision: None,
            follow: false,
            client_identity: Some("plc2".into()),
        };
        let (request, changed) = declared.update_request(&stored);
        assert_eq!(changed, ["outbound-token-file", "peer-cacert", "follow"]);
        assert_eq!(
            request,
            pb::UpdatePeerRequest {
                peer_id: 7,
                outbound_token: Some("new".into()),
                cacert: Some(String::new()),
                follow: Some(true),
                ..Default::default()
            }
        );
        let settled = PeerRow {
            outbound_token: Some("new".into()),
            cacert: None,
            follow: true,
            ..stored
        };
        assert_eq!(declared.update_request(&settled).1, Vec::<&str>::new());
    }
}
