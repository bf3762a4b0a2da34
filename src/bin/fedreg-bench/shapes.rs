//! The data sets of the federation benchmark: four sizes ([`Size`]), each
//! multiplied by `--scale`.
//!
//! Objects are spread round-robin: node n at site n mod sites, slice n at
//! site n mod sites, slice n holds persons (n+p) mod persons and nodes
//! (n+k) mod nodes; person n belongs to site n mod sites (primary) with the
//! role user and `keys_per_person` keys.

use clap::ValueEnum;

/// A data set's base size (before `--scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// 5 objects: a site, a person with a key, a node, a slice holding both.
    Mini,
    /// 25 objects: 4 sites, 4 persons with 2 keys each, 5 nodes, 4 slices
    /// of 3 nodes and 4 persons each.
    Normal,
    /// 2,050 objects: 200 sites, 500 persons with a key each, 350 nodes,
    /// 500 slices of 3 nodes and 3 persons each.
    Big,
    /// 10,000 objects: 1,000 sites, 2,000 persons with a key each, 3,000
    /// nodes, 2,000 slices of 3 nodes and 3 persons each.
    Huge,
}

impl Size {
    /// The size's name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Size::Mini => "mini",
            Size::Normal => "normal",
            Size::Big => "big",
            Size::Huge => "huge",
        }
    }
}

/// Object counts and membership ratios of one data set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The base size.
    pub size: Size,
    /// Multiplier applied to the base size.
    pub scale: usize,
    /// Sites.
    pub sites: usize,
    /// Persons.
    pub persons: usize,
    /// Keys of each person.
    pub keys_per_person: usize,
    /// Nodes.
    pub nodes: usize,
    /// Slices.
    pub slices: usize,
    /// Nodes in each slice.
    pub nodes_per_slice: usize,
    /// Persons in each slice.
    pub persons_per_slice: usize,
}

impl Shape {
    /// The data set of `size`, with object counts multiplied by `scale`.
    pub fn new(size: Size, scale: usize) -> Shape {
        let (sites, persons, keys_per_person, nodes, slices, nps, pps) = match size {
            Size::Mini => (1, 1, 1, 1, 1, 1, 1),
            Size::Normal => (4, 4, 2, 5, 4, 3, 6),
            Size::Big => (200, 500, 1, 350, 500, 3, 3),
            Size::Huge => (1000, 2000, 1, 3000, 2000, 3, 3),
        };
        Shape {
            size,
            scale,
            sites: sites * scale,
            persons: persons * scale,
            keys_per_person,
            nodes: nodes * scale,
            slices: slices * scale,
            // A slice cannot hold more distinct members than exist.
            nodes_per_slice: nps.min(nodes * scale),
            persons_per_slice: pps.min(persons * scale),
        }
    }

    /// Label such as `huge` or `huge×10`.
    pub fn label(&self) -> String {
        if self.scale == 1 {
            self.size.name().to_owned()
        } else {
            format!("{}×{}", self.size.name(), self.scale)
        }
    }

    /// Number of keys.
    pub fn keys(&self) -> usize {
        self.persons * self.keys_per_person
    }

    /// Number of objects (sites, keys, persons, nodes, slices).
    pub fn objects(&self) -> usize {
        self.sites + self.keys() + self.persons + self.nodes + self.slices
    }

    /// Number of memberships (person-site, person-role, person-key, slice-node, slice-person).
    pub fn memberships(&self) -> usize {
        2 * self.persons
            + self.keys()
            + self.slices * (self.nodes_per_slice + self.persons_per_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object counts the sizes' documentation gives.
    #[test]
    fn documented_counts() {
        let objects = |size| Shape::new(size, 1).objects();
        assert_eq!(objects(Size::Mini), 5);
        assert_eq!(objects(Size::Normal), 25);
        assert_eq!(objects(Size::Big), 2_050);
        assert_eq!(objects(Size::Huge), 10_000);
        assert_eq!(Shape::new(Size::Normal, 1).persons_per_slice, 4);
        assert_eq!(Shape::new(Size::Huge, 10).label(), "huge×10");
    }
}
