//! The cache of peers' objects, read and written in bulk.
//!
//! A refresh compares what a peer serves with what is cached from it and
//! writes only the difference. Every query here is set-based: the cached
//! rows of a peer load in one query per class, changed and new rows go in
//! multi-row upserts keyed on `(peer_id, peer_<class>_id)`, gone rows in
//! multi-row deletes; relation rows likewise. The one exception is a few
//! rows on SQLite (or one on PostgreSQL), upserted one statement per row
//! that the connection keeps prepared ([`crate::store::prepared`]): there,
//! preparing a multi-row statement would cost more than running it.
//!
//! The module holds, by job: [`classes`] (the classes as tables:
//! [`CachedClass`], declared per class, also read for the local rows the
//! export serves), [`relations`] (membership tables), [`lookups`] (a
//! peer's cached rows looked up during a refresh), [`exported`] (the
//! local memberships the export serves), [`enumerations`] and `batch`
//! (how ids are read and rows written in batches).
//!
//! [`CachedClass`] describes one class of objects (its table, the columns a
//! refresh compares, its natural key); the `cached_class!` macro declares
//! it for sites, keys, persons, nodes and slices from one column list
//! each, as one statement per operation, and the trait's provided methods
//! run those statements over batches of ids and chunks of rows, for every
//! class alike. [`RelationTable`] does the same for the membership tables.

mod batch;
pub mod classes;
pub mod enumerations;
pub mod exported;
pub mod lookups;
pub mod relations;

pub use batch::IdBatch;
pub use classes::*;
pub use enumerations::*;
pub use exported::*;
pub use lookups::*;
pub use relations::*;
