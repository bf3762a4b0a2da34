//! The pure part of a refresh: cleaning a peer's objects and diffing them
//! against the cache. No database here; `sync` applies what this computes.

use foldhash::{HashMap, HashSet, HashSetExt};
use std::hash::Hash;

use crate::proto::v1 as pb;

/// Boot states of older registries and what they mean now.
const OLD_BOOT_STATES: &[(&str, &str)] = &[
    ("dbg", "safeboot"),
    ("diag", "safeboot"),
    ("disable", "disabled"),
    ("inst", "reinstall"),
    ("rins", "reinstall"),
    ("new", "reinstall"),
    ("rcnf", "reinstall"),
];

/// Input cleaning of a person as it arrives: disabled persons are not
/// federated, so they are dropped (`false`).
///
/// Relation ids that point at objects the peer did not expose (nodes of
/// slices, keys of persons...) are dropped later, when they are translated
/// to local ids; fields this registry does not know never got past
/// protobuf decoding.
pub fn keep_person(person: &mut pb::ExportedPerson) -> bool {
    person.enabled
}

/// Input cleaning of a node as it arrives: boot states of older
/// registries are rewritten to today's names.
pub fn clean_node(node: &mut pb::ExportedNode) {
    if let Some((_, new)) = OLD_BOOT_STATES
        .iter()
        .find(|(old, _)| *old == node.boot_state)
    {
        node.boot_state = (*new).to_owned();
    }
}

/// What a refresh does to one kind of object.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<F> {
    /// New and changed rows, keyed on the peer's id.
    pub upserts: Vec<(i64, F)>,
    /// Peer's ids of cached rows the peer no longer has.
    pub deletes: Vec<i64>,
    /// How many of `upserts` are new.
    pub added: usize,
    /// How many of `upserts` are changes.
    pub updated: usize,
    /// The peer's ids of the `upserts` that change only the digest (the
    /// object's memberships changed at the peer, or its digest was
    /// cleared here): written, not counted as updated.
    pub restamped: Vec<i64>,
}

/// Fields that may carry the digest of the object they came from
/// ([`crate::peering::digest`]).
pub trait Stamped {
    /// Whether `self` and `other` differ in their digests only.
    fn differs_only_in_digest(&self, other: &Self) -> bool;

    /// The digest of the object the fields came from, when known.
    fn digest(&self) -> Option<i64>;
}

/// Compares what the peer sent (peer's id → fields, already translated to
/// local ids) with what is cached (peer's id → fields).
/// Unchanged rows appear nowhere in the plan, so an unchanged dump writes
/// nothing.
pub fn diff<F: Clone + PartialEq + Stamped>(
    incoming: Vec<(i64, F)>,
    cached: &HashMap<i64, F>,
) -> Plan<F> {
    let mut seen = HashSet::with_capacity(incoming.len());
    let mut plan = Plan {
        upserts: Vec::new(),
        deletes: Vec::new(),
        added: 0,
        updated: 0,
        restamped: Vec::new(),
    };
    for (peer_id, fields) in incoming {
        seen.insert(peer_id);
        match cached.get(&peer_id) {
            Some(old) if *old == fields => {}
            Some(old) => {
                match old.differs_only_in_digest(&fields) {
                    true => plan.restamped.push(peer_id),
                    false => plan.updated += 1,
                }
                plan.upserts.push((peer_id, fields));
            }
            None => {
                plan.added += 1;
                plan.upserts.push((peer_id, fields));
            }
        }
    }
    plan.deletes = cached
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    plan.deletes.sort_unstable();
    plan
}

/// Pairs to add and to remove to turn `existing` into `desired`, sorted.
pub fn diff_sets<T: Eq + Hash + Ord + Copy>(
    desired: &HashSet<T>,
    existing: &HashSet<T>,
) -> (Vec<T>, Vec<T>) {
    let mut add: Vec<T> = desired.difference(existing).copied().collect();
    let mut remove: Vec<T> = existing.difference(desired).copied().collect();
    add.sort_unstable();
    remove.sort_unstable();
    (add, remove)
}

/// A site membership: (person, site, is_primary).
pub type Membership = (i64, i64, bool);

/// Site memberships to add and to remove; a change of the primary flag is
/// a removal and an addition.
pub fn diff_memberships(
    desired: &HashMap<(i64, i64), bool>,
    existing: &HashMap<(i64, i64), bool>,
) -> (Vec<Membership>, Vec<(i64, i64)>) {
    let mut add: Vec<Membership> = desired
        .iter()
        .filter(|(pair, primary)| existing.get(pair) != Some(primary))
        .map(|(&(p, s), &primary)| (p, s, primary))
        .collect();
    let mut remove: Vec<(i64, i64)> = existing
        .iter()
        .filter(|(pair, primary)| desired.get(pair) != Some(primary))
        .map(|(&pair, _)| pair)
        .collect();
    add.sort_unstable();
    remove.sort_unstable();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_drops_disabled_persons_and_rewrites_boot_states() {
        let mut enabled = pb::ExportedPerson {
            enabled: true,
            ..Default::default()
        };
        let mut disabled = pb::ExportedPerson::default();
        assert!(keep_person(&mut enabled));
        assert!(!keep_person(&mut disabled));

        let states: Vec<String> = [
            "dbg", "diag", "disable", "inst", "rins", "new", "rcnf", "boot", "odd",
        ]
        .iter()
        .map(|s| {
            let mut node = pb::ExportedNode {
                boot_state: s.to_string(),
                ..Default::default()
            };
            clean_node(&mut node);
            node.boot_state
        })
        .collect();
        assert_eq!(
            states,
            [
                "safeboot",
                "safeboot",
                "disabled",
                "reinstall",
                "reinstall",
                "reinstall",
                "reinstall",
                "boot",
                "odd"
            ]
        );
    }

    /// Test fields: a value and a digest.
    #[derive(Debug, Clone, PartialEq)]
    struct Row(&'static str, Option<i64>);

    impl Stamped for Row {
        fn differs_only_in_digest(&self, other: &Row) -> bool {
            self.0 == other.0 && self.1 != other.1
        }

        fn digest(&self) -> Option<i64> {
            self.1
        }
    }

    #[test]
    fn a_new_digest_alone_is_written_but_not_counted_as_an_update() {
        let cached: HashMap<i64, Row> = [
            (1, Row("a", Some(1))),
            (2, Row("b", None)),
            (3, Row("c", Some(3))),
        ]
        .into_iter()
        .collect();
        let incoming = vec![
            (1, Row("a", Some(1))),
            (2, Row("b", Some(2))),
            (3, Row("C", Some(4))),
        ];
        let plan = diff(incoming, &cached);
        assert_eq!(
            plan.upserts,
            vec![(2, Row("b", Some(2))), (3, Row("C", Some(4)))]
        );
        assert_eq!((plan.added, plan.updated), (0, 1));
        assert_eq!(plan.restamped, vec![2]);
    }

    #[test]
    fn diff_adds_updates_deletes_and_skips_unchanged() {
        let cached: HashMap<i64, Row> = [
            (1, Row("same", None)),
            (2, Row("old", None)),
            (3, Row("gone", None)),
        ]
        .into_iter()
        .collect();
        let incoming = vec![
            (1, Row("same", None)),
            (2, Row("new", None)),
            (4, Row("added", None)),
        ];
        let plan = diff(incoming, &cached);
        assert_eq!(
            plan.upserts,
            vec![(2, Row("new", None)), (4, Row("added", None))]
        );
        assert_eq!(plan.deletes, vec![3]);
        assert_eq!((plan.added, plan.updated), (1, 1));
    }

    #[test]
    fn unchanged_dump_plans_nothing() {
        let cached: HashMap<i64, Row> = [(1, Row("7", Some(7))), (2, Row("8", None))]
            .into_iter()
            .collect();
        let plan = diff(vec![(2, Row("8", None)), (1, Row("7", Some(7)))], &cached);
        assert!(plan.upserts.is_empty() && plan.deletes.is_empty());
    }

    #[test]
    fn set_and_membership_diffs() {
        let desired: HashSet<(i64, i64)> = [(1, 1), (1, 2)].into_iter().collect();
        let existing: HashSet<(i64, i64)> = [(1, 2), (2, 2)].into_iter().collect();
        assert_eq!(diff_sets(&desired, &existing), (vec![(1, 1)], vec![(2, 2)]));

        let desired: HashMap<(i64, i64), bool> =
            [((1, 1), true), ((1, 2), false)].into_iter().collect();
        let existing: HashMap<(i64, i64), bool> =
            [((1, 1), false), ((1, 2), false)].into_iter().collect();
        let (add, remove) = diff_memberships(&desired, &existing);
        assert_eq!(add, vec![(1, 1, true)]);
        assert_eq!(remove, vec![(1, 1)]);
    }
}
