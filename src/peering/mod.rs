//! Federation: serving this registry's objects to peers and refreshing the
//! cache of theirs.
//!
//! A refresh is a pipeline, each stage in its own module:
//! [`fetch`] (stream the peer's dump into a [`spool`] on disk, cleaning it
//! on the way with [`diff::keep_person`] and [`diff::clean_node`], and
//! check it is whole) → [`sync`] (translate ids, validate object by
//! object, [`diff::diff`] against the cache, write set-based) inside one
//! transaction driven by [`refresh`], under the per-peer locks of [`lock`].
//! [`export`] is the serving side (`GetPeerData`), [`schedule`] runs
//! refreshes on a timer (the peer records themselves are
//! [`crate::registry::peers`]). Follow mode:
//! [`announce`] serves `Follow` (a peer's changes as they are committed,
//! read by [`carried`] once for all streams), [`follow`] keeps such streams open to followed peers and refreshes at
//! each change. Both serving streams hand their messages to the network
//! through an [`outbox`] (bounded, with a send timeout). [`join`] is the
//! joining side of peering by invitation.

pub mod announce;
pub mod carried;
pub mod compaction;
pub mod diff;
pub mod digest;
pub mod digest_service;
pub mod export;
pub mod fetch;
pub mod follow;
pub mod join;
pub mod lock;
pub mod outbox;
pub mod refresh;
pub mod report;
pub mod schedule;
pub mod spool;
pub mod sync;
pub mod verify;
