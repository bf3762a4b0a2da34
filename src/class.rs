//! The classes of objects fedreg federates, the relations between them,
//! and maps over either.
//!
//! [`Class`] names one class (sites, keys, persons, nodes, slices) with
//! one word everywhere: in refresh reports, in the change log and in the
//! code. [`Relation`] names one kind of membership a refresh reconciles (a
//! person's keys, a slice's nodes, ...), as refresh reports do.
//! [`PerClass`] and [`PerRelation`] hold one value per class or relation,
//! indexed by it and iterated in order: the classes in dependency order (a
//! class only refers to classes before it), which is the order a refresh
//! applies them in; the relations in report order. Adding a class is
//! adding a variant here, its table's declaration in
//! [`crate::store::cache`] and its module in [`crate::registry`].

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use crate::proto::v1 as pb;

/// One class of federated objects, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Sites.
    Sites,
    /// Public keys of persons.
    Keys,
    /// Persons (their keys, sites and roles are memberships).
    Persons,
    /// Nodes, each at a site.
    Nodes,
    /// Slices, each of a site (their nodes and persons are memberships).
    Slices,
}

impl Class {
    /// Every class, in dependency order.
    pub const ALL: [Class; 5] = [
        Class::Sites,
        Class::Keys,
        Class::Persons,
        Class::Nodes,
        Class::Slices,
    ];

    /// Name of the class in reports (`sites`, `keys`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Class::Sites => "sites",
            Class::Keys => "keys",
            Class::Persons => "persons",
            Class::Nodes => "nodes",
            Class::Slices => "slices",
        }
    }

    /// The class's code in the change log (`export_log.kind`). The SQL
    /// triggers that write the log use the same codes; this is where they
    /// are defined.
    pub const fn log_code(self) -> i32 {
        match self {
            Class::Sites => 1,
            Class::Keys => 2,
            Class::Persons => 3,
            Class::Nodes => 4,
            Class::Slices => 5,
        }
    }

    /// The class of a change-log code, `None` for an unknown one.
    pub fn of_log_code(code: i32) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.log_code() == code)
    }
}

impl Variant<5> for Class {
    const ALL: [Class; 5] = Class::ALL;

    fn index(self) -> usize {
        self as usize
    }
}

/// One kind of membership a refresh reconciles, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// The keys of persons.
    PersonKeys,
    /// The nodes of slices.
    SliceNodes,
    /// The persons of slices.
    SlicePersons,
    /// The sites of persons (with the primary one).
    SitePersons,
    /// The roles of persons.
    PersonRoles,
}

impl Relation {
    /// Every relation, in report order.
    pub const ALL: [Relation; 5] = [
        Relation::PersonKeys,
        Relation::SliceNodes,
        Relation::SlicePersons,
        Relation::SitePersons,
        Relation::PersonRoles,
    ];

    /// Name of the relation in reports (`person_keys`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Relation::PersonKeys => "person_keys",
            Relation::SliceNodes => "slice_nodes",
            Relation::SlicePersons => "slice_persons",
            Relation::SitePersons => "site_persons",
            Relation::PersonRoles => "person_roles",
        }
    }
}

impl Variant<5> for Relation {
    const ALL: [Relation; 5] = Relation::ALL;

    fn index(self) -> usize {
        self as usize
    }
}

/// An enum of `N` variants that index a [`PerVariant`] map.
pub trait Variant<const N: usize>: Copy + 'static {
    /// Every variant, in order.
    const ALL: [Self; N];

    /// Position in [`Variant::ALL`].
    fn index(self) -> usize;
}

/// One value per class.
pub type PerClass<T> = PerVariant<Class, T, 5>;

/// One value per relation.
pub type PerRelation<T> = PerVariant<Relation, T, 5>;

/// One value per variant of `K` (a [`Class`], a [`Relation`]), indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerVariant<K, T, const N: usize> {
    values: [T; N],
    keys: PhantomData<K>,
}

impl<K: Variant<N>, T, const N: usize> PerVariant<K, T, N> {
    /// The map whose value of each variant is `f(variant)`.
    pub fn from_fn(mut f: impl FnMut(K) -> T) -> PerVariant<K, T, N> {
        PerVariant {
            values: K::ALL.map(&mut f),
            keys: PhantomData,
        }
    }

    /// The variants and their values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.into_iter().zip(self.values.iter())
    }

    /// The values, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }

    /// The values, mutably, in order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.values.iter_mut()
    }
}

impl<K: Variant<N>, T: Default, const N: usize> Default for PerVariant<K, T, N> {
    fn default() -> Self {
        PerVariant::from_fn(|_| T::default())
    }
}

impl<K: Variant<N>, T, const N: usize> Index<K> for PerVariant<K, T, N> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        &self.values[key.index()]
    }
}

impl<K: Variant<N>, T, const N: usize> IndexMut<K> for PerVariant<K, T, N> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.values[key.index()]
    }
}

impl From<PerClass<i64>> for pb::CachedCounts {
    fn from(counts: PerClass<i64>) -> pb::CachedCounts {
        pb::CachedCounts {
            sites: counts[Class::Sites],
            keys: counts[Class::Keys],
            persons: counts[Class::Persons],
            nodes: counts[Class::Nodes],
            slices: counts[Class::Slices],
        }
    }
}

impl pb::DeletedObjects {
    /// The deleted ids of `class`.
    pub fn ids_mut(&mut self, class: Class) -> &mut Vec<i64> {
        match class {
            Class::Sites => &mut self.site_ids,
            Class::Keys => &mut self.key_ids,
            Class::Persons => &mut self.person_ids,
            Class::Nodes => &mut self.node_ids,
            Class::Slices => &mut self.slice_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_codes_are_distinct_and_round_trip() {
        for class in Class::ALL {
            assert_eq!(Class::of_log_code(class.log_code()), Some(class));
            assert_eq!(Class::ALL[class.index()], class);
        }
        assert_eq!(Class::of_log_code(0), None);
    }

    #[test]
    fn maps_follow_their_variants_order() {
        for relation in Relation::ALL {
            assert_eq!(Relation::ALL[relation.index()], relation);
        }
        let mut counts = PerRelation::<usize>::default();
        counts[Relation::SitePersons] += 2;
        let names: Vec<(&str, usize)> = counts.iter().map(|(r, n)| (r.name(), *n)).collect();
        assert_eq!(names[3], ("site_persons", 2));
        assert_eq!(names.len(), 5);
    }
}
