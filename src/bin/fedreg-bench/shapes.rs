//! The data sets of the federation benchmark: REFERENCE sizes mini, normal,
//! big and huge, and huge multiplied by `--scale`.
//!
//! Objects are spread round-robin: node n at site n mod sites, slice n at
//! site n mod sites, slice n holds persons (n+p) mod persons and nodes
//! (n+k) mod nodes; person n belongs to site n mod sites (primary) with the
//! role user and `keys_per_person` keys.

/// Object counts and membership ratios of one data set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Name printed in the table.
    pub name: &'static str,
    /// Multiplier applied to the base size.
    pub scale: usize,
    pub sites: usize,
    pub persons: usize,
    pub keys_per_person: usize,
    pub nodes: usize,
    pub slices: usize,
    pub nodes_per_slice: usize,
    pub persons_per_slice: usize,
}

impl Shape {
    /// The named size, with object counts multiplied by `scale`.
    pub fn named(name: &str, scale: usize) -> Option<Shape> {
        let base = match name {
            "mini" => (1, 1, 1, 1, 1, 1, 1),
            "normal" => (4, 4, 2, 5, 4, 3, 6),
            "big" => (200, 500, 1, 350, 500, 3, 3),
            "huge" => (1000, 2000, 1, 3000, 2000, 3, 3),
            _ => return None,
        };
        let (sites, persons, keys_per_person, nodes, slices, nps, pps) = base;
        let name = match name {
            "mini" => "mini",
            "normal" => "normal",
            "big" => "big",
            _ => "huge",
        };
        Some(Shape {
            name,
            scale,
            sites: sites * scale,
            persons: persons * scale,
            keys_per_person,
            nodes: nodes * scale,
            slices: slices * scale,
            // A slice cannot hold more distinct members than exist.
            nodes_per_slice: nps.min(nodes * scale),
            persons_per_slice: pps.min(persons * scale),
        })
    }

    /// Label such as `huge` or `huge×10`.
    pub fn label(&self) -> String {
        if self.scale == 1 {
            self.name.to_owned()
        } else {
            format!("{}×{}", self.name, self.scale)
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
