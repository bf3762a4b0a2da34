//! A peer's objects → the fields cached of them: the peer's relation ids
//! become local ids, then each class's module in [`crate::registry`]
//! translates and checks the object as the admin API checks one. A bad
//! object is skipped with a warning naming it. Each function (and
//! [`KeyChecks`], which decides a key's owner first) takes the object's
//! digest as received (computed by the caller, which compares it first)
//! and keeps it with the fields.

use foldhash::HashMap;

use super::IdMaps;
use super::cached::KeyOwners;
use super::engine::Checks;
use crate::class::Class;
use crate::error::Result;
use crate::peering::report::ReportBuilder;
use crate::proto::v1 as pb;
use crate::registry::nodes::NodeEnumerations;
use crate::registry::{keys, nodes, persons, sites, slices};
use crate::store::cache::{KeyFields, NodeFields, PersonFields, SiteFields, SliceFields};

/// Runs a validator on a peer's value: `Some(value)`, or `None` with a
/// warning naming the object.
pub(super) fn checked<T>(
    report: &mut ReportBuilder,
    class: &str,
    id: i64,
    natural: &str,
    result: Result<T>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            report.warn(class, id, natural, e.to_string());
            None
        }
    }
}

/// Fields with the digest of the object they came from.
fn digested<F: Digest>(mut fields: F, digest: i64) -> F {
    *fields.sync_digest() = Some(digest);
    fields
}

/// Fields that keep their object's digest.
trait Digest {
    fn sync_digest(&mut self) -> &mut Option<i64>;
}

macro_rules! digest_of_fields {
    ($($fields:ty),*) => {
        $(impl Digest for $fields {
            fn sync_digest(&mut self) -> &mut Option<i64> {
                &mut self.sync_digest
            }
        })*
    };
}

digest_of_fields!(SiteFields, KeyFields, PersonFields, NodeFields, SliceFields);

/// A site the peer sent, checked as the admin API checks one.
pub(super) fn prepare_site(
    s: pb::ExportedSite,
    digest: i64,
    report: &mut ReportBuilder,
) -> Option<(i64, SiteFields)> {
    let (id, label) = (s.site_id, crate::error::quoted(&s.login_base));
    let fields = checked(report, Class::Sites.name(), id, &label, sites::from_peer(s))?;
    Some((id, digested(fields, digest)))
}

/// The checks of the keys the peer sent: each is taken only when a person
/// of the peer holds it ([`KeyOwners`], decided for every key), and
/// checked as the admin API checks one.
pub(super) struct KeyChecks<'a> {
    /// The key types this registry knows.
    pub(super) key_types: &'a std::collections::HashSet<String>,
    /// Who holds the keys of the refresh.
    pub(super) owners: &'a KeyOwners,
}

impl Checks<pb::ExportedKey, KeyFields> for KeyChecks<'_> {
    fn admit(&mut self, k: &pb::ExportedKey, report: &mut ReportBuilder) -> bool {
        match self.owners.holds(k.key_id) {
            Ok(held) => held,
            Err(reason) => {
                report.warn(Class::Keys.name(), k.key_id, &key_label(&k.key), reason);
                false
            }
        }
    }

    fn prepare(
        &mut self,
        k: pb::ExportedKey,
        digest: i64,
        report: &mut ReportBuilder,
    ) -> Option<(i64, KeyFields)> {
        let class = Class::Keys.name();
        let label = key_label(&k.key);
        if !self.key_types.contains(&k.key_type) {
            report.warn(
                class,
                k.key_id,
                &label,
                format!("unknown key_type {:?}", crate::error::quoted(&k.key_type)),
            );
            return None;
        }
        let id = k.key_id;
        let fields = checked(report, class, id, &label, keys::from_peer(k))?;
        Some((id, digested(fields, digest)))
    }
}

/// A short name for a key in warnings: its comment, or its start.
pub(super) fn key_label(key: &str) -> String {
    match key.split_whitespace().nth(2) {
        Some(comment) => crate::error::quoted(comment),
        None => key.chars().take(24).collect(),
    }
}

/// A person the peer sent, checked as the admin API checks one.
pub(super) fn prepare_person(
    p: pb::ExportedPerson,
    digest: i64,
    report: &mut ReportBuilder,
) -> Option<(i64, PersonFields)> {
    let (id, label) = (p.person_id, crate::error::quoted(&p.email));
    let fields = checked(
        report,
        Class::Persons.name(),
        id,
        &label,
        persons::from_peer(p),
    )?;
    Some((id, digested(fields, digest)))
}

/// A node the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites.
pub(super) fn prepare_node(
    n: pb::ExportedNode,
    digest: i64,
    sites: &HashMap<i64, i64>,
    known: &NodeEnumerations,
    report: &mut ReportBuilder,
) -> Option<(i64, NodeFields)> {
    let class = Class::Nodes.name();
    let label = crate::error::quoted(&n.hostname);
    let Some(&site_id) = sites.get(&n.site_id) else {
        report.warn(
            class,
            n.node_id,
            &label,
            format!(
                "its site {} is not among the peer's synced sites",
                n.site_id
            ),
        );
        return None;
    };
    let id = n.node_id;
    let fields = checked(
        report,
        class,
        id,
        &label,
        nodes::from_peer(n, site_id, known),
    )?;
    Some((id, digested(fields, digest)))
}

/// A slice the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites, and its name must start with
/// that site's login_base.
pub(super) fn prepare_slice(
    s: pb::ExportedSlice,
    digest: i64,
    ids: &IdMaps,
    login_bases: &HashMap<i64, String>,
    instantiations: &std::collections::HashSet<String>,
    report: &mut ReportBuilder,
) -> Option<(i64, SliceFields)> {
    let class = Class::Slices.name();
    let label = crate::error::quoted(&s.name);
    let Some(&site_id) = ids.classes[Class::Sites].get(&s.site_id) else {
        report.warn(
            class,
            s.slice_id,
            &label,
            format!(
                "its site {} is not among the peer's synced sites",
                s.site_id
            ),
        );
        return None;
    };
    let (id, peer_site_id) = (s.slice_id, s.site_id);
    let creator = s
        .creator_person_id
        .and_then(|p| ids.classes[Class::Persons].get(&p).copied());
    let fields = checked(
        report,
        class,
        id,
        &label,
        slices::from_peer(s, site_id, creator, instantiations),
    )?;
    let login_base = login_bases.get(&peer_site_id).map_or("", String::as_str);
    if slices::login_base_of(&fields.name) != login_base {
        report.warn(
            class,
            id,
            &label,
            format!("name must start with its site's login_base {login_base:?}"),
        );
        return None;
    }
    Some((id, digested(fields, digest)))
}
