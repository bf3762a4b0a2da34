//! A peer's objects → the fields cached of them, with the checks the
//! admin API makes of the same objects; the peer's relation ids become
//! local ids. A bad object is skipped with a warning naming it.

use std::collections::{HashMap, HashSet};

use super::IdMaps;
use super::cached::KeyOwners;
use crate::class::Class;
use crate::error::Result;
use crate::peering::report::ReportBuilder;
use crate::proto::v1 as pb;
use crate::registry::nodes::NodeEnumerations;
use crate::registry::{keys as key_rules, nodes as node_rules, persons as person_rules};
use crate::registry::{sites as site_rules, slices as slice_rules};
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

/// A site the peer sent, checked as the admin API checks one.
pub(super) fn prepare_site(
    s: pb::ExportedSite,
    report: &mut ReportBuilder,
) -> Option<(i64, SiteFields)> {
    let label = crate::error::quoted(&s.login_base);
    let fields = SiteFields {
        login_base: s.login_base,
        name: s.name,
        abbreviated_name: s.abbreviated_name,
        enabled: s.enabled,
        is_public: s.is_public,
        max_slices: s.max_slices,
        max_slivers: s.max_slivers,
        latitude: s.latitude,
        longitude: s.longitude,
        url: s.url,
        ext_consortium_id: s.ext_consortium_id,
    };
    let fields = checked(
        report,
        Class::Sites.name(),
        s.site_id,
        &label,
        site_rules::checked(fields),
    )?;
    Some((s.site_id, fields))
}

/// A key the peer sent, checked as the admin API checks one, and taken
/// only when a person of the peer holds it ([`KeyOwners`]).
pub(super) fn prepare_key(
    k: pb::ExportedKey,
    key_types: &HashSet<String>,
    owners: &KeyOwners,
    report: &mut ReportBuilder,
) -> Option<(i64, KeyFields)> {
    let class = Class::Keys.name();
    let label = key_label(&k.key);
    match owners.holds(k.key_id) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(reason) => {
            report.warn(class, k.key_id, &label, reason);
            return None;
        }
    }
    if !key_types.contains(&k.key_type) {
        report.warn(
            class,
            k.key_id,
            &label,
            format!("unknown key_type {:?}", crate::error::quoted(&k.key_type)),
        );
        return None;
    }
    let fields = KeyFields {
        key_type: k.key_type,
        key: k.key,
        is_blacklisted: k.is_blacklisted,
    };
    let fields = checked(report, class, k.key_id, &label, key_rules::checked(fields))?;
    Some((k.key_id, fields))
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
    report: &mut ReportBuilder,
) -> Option<(i64, PersonFields)> {
    let label = crate::error::quoted(&p.email);
    let fields = PersonFields {
        email: p.email,
        first_name: p.first_name,
        last_name: p.last_name,
        title: p.title,
        phone: p.phone,
        url: p.url,
        bio: p.bio,
        enabled: p.enabled,
    };
    let fields = checked(
        report,
        Class::Persons.name(),
        p.person_id,
        &label,
        person_rules::checked(fields),
    )?;
    Some((p.person_id, fields))
}

/// A node the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites.
pub(super) fn prepare_node(
    n: pb::ExportedNode,
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
    let fields = NodeFields {
        hostname: n.hostname,
        site_id,
        node_type: n.node_type,
        boot_state: n.boot_state,
        run_level: n.run_level,
        model: n.model,
        version: n.version,
        ssh_rsa_key: n.ssh_rsa_key,
        verified: n.verified,
    };
    let fields = checked(
        report,
        class,
        n.node_id,
        &label,
        node_rules::checked(fields, known),
    )?;
    Some((n.node_id, fields))
}

/// A slice the peer sent, checked as the admin API checks one; its site
/// must be one of the peer's synced sites, and its name must start with
/// that site's login_base.
pub(super) fn prepare_slice(
    s: pb::ExportedSlice,
    ids: &IdMaps,
    login_bases: &HashMap<i64, String>,
    instantiations: &HashSet<String>,
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
    let fields = SliceFields {
        site_id,
        name: s.name,
        instantiation: s.instantiation,
        url: s.url,
        description: s.description,
        max_nodes: s.max_nodes,
        creator_person_id: s
            .creator_person_id
            .and_then(|p| ids.classes[Class::Persons].get(&p).copied()),
        created: s.created.map(|t| t.seconds).unwrap_or_default(),
        expires: s.expires.map(|t| t.seconds).unwrap_or_default(),
    };
    let fields = checked(
        report,
        class,
        s.slice_id,
        &label,
        slice_rules::checked(fields, instantiations),
    )?;
    let login_base = login_bases.get(&s.site_id).map_or("", String::as_str);
    if slice_rules::login_base_of(&fields.name) != login_base {
        report.warn(
            class,
            s.slice_id,
            &label,
            format!("name must start with its site's login_base {login_base:?}"),
        );
        return None;
    }
    Some((s.slice_id, fields))
}
