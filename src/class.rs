//! The classes of objects fedreg federates, and a map over them.
//!
//! [`Class`] names one class (sites, keys, persons, nodes, slices) with
//! one word everywhere: in refresh reports, in the change log and in the
//! code. [`PerClass`] holds one value per class, indexed by [`Class`] and
//! iterated in dependency order (a class only refers to classes before
//! it), which is the order a refresh applies them in. Adding a class is
//! adding a variant here and its table's declaration in
//! [`crate::store::cache`].

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

    /// Position in [`Class::ALL`].
    const fn index(self) -> usize {
        self as usize
    }
}

/// One value per class, indexed by [`Class`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerClass<T>([T; 5]);

impl<T> PerClass<T> {
    /// The map whose value of each class is `f(class)`.
    pub fn from_fn(mut f: impl FnMut(Class) -> T) -> PerClass<T> {
        PerClass(Class::ALL.map(&mut f))
    }

    /// The classes and their values, in dependency order.
    pub fn iter(&self) -> impl Iterator<Item = (Class, &T)> {
        Class::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, in dependency order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// The values, mutably, in dependency order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut()
    }
}

impl<T> Index<Class> for PerClass<T> {
    type Output = T;

    fn index(&self, class: Class) -> &T {
        &self.0[class.index()]
    }
}

impl<T> IndexMut<Class> for PerClass<T> {
    fn index_mut(&mut self, class: Class) -> &mut T {
        &mut self.0[class.index()]
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
}
