//! The cache of peers' objects, read and written in bulk.
//!
//! A refresh compares what a peer serves with what is cached from it and
//! writes only the difference. Every query here is set-based: the cached
//! rows of a peer load in one query per kind, changed and new rows go in
//! multi-row upserts keyed on `(peer_id, peer_<kind>_id)`, gone rows in
//! multi-row deletes; relation rows likewise. Nothing issues a statement per
//! object.
//!
//! The module holds, by job: [`kinds`] (the classes as tables:
//! [`CachedKind`], declared per class, also read for the local rows the
//! export serves), [`relations`] (membership tables), [`lookups`] (a
//! peer's cached rows looked up during a refresh), [`exported`] (the
//! local memberships the export serves), [`enumerations`] and [`batch`]
//! (how ids are read and rows written in batches).
//!
//! [`CachedKind`] describes one kind of object (its table, the columns a
//! refresh compares, its natural key); the `cached_kind!` macro implements it
//! for sites, keys, persons, nodes and slices from one column list each.
//! [`Relation`] does the same for the membership tables.

mod batch;
pub mod enumerations;
pub mod exported;
pub mod kinds;
pub mod lookups;
pub mod relations;

pub use enumerations::*;
pub use exported::*;
pub use kinds::*;
pub use lookups::*;
pub use relations::*;
