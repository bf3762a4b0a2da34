//! The changes a `Follow` event carries: a small delta, read into memory.
//!
//! A commit's changes are read once for every stream that asks for them
//! ([`SharedChanges`]): the read shows the nodes cached here of every peer
//! among the slices' nodes, and each stream's event keeps those of its own
//! caller, as a delta `GetPeerData` would stream them to that caller. So
//! the serving work of a change does not grow with the streams following
//! it beyond sending the bytes. A stream that is not where the shared
//! changes start (it opened behind, or was held back by its caller) reads
//! its own ([`for_stream`]).
//!
//! Carrying is an optimisation: changes too many, too large, of another
//! epoch, or whose read fails are not carried, and the caller fetches them
//! with a delta `GetPeerData`.

use super::export::{self, Audience, Bounds, Collected};
use crate::metrics::ReadCounter;
use crate::proto::v1 as pb;
use crate::store::Store;

/// What an event may carry: changes spanning more revisions, or whose
/// encoding outgrows more bytes, are left to `GetPeerData`.
pub const BOUNDS: Bounds = Bounds {
    revisions: 256,
    bytes: 1024 * 1024,
};

/// Whether a delta from `since` to `to` may be carried.
fn within_reach(since: &pb::Checkpoint, to: &pb::Checkpoint) -> bool {
    to.epoch == since.epoch && to.revision - since.revision <= BOUNDS.revisions
}

/// What came of reading the changes an event may carry.
pub enum Carried {
    /// Nothing moved since the checkpoint last announced.
    Unchanged,
    /// The changes, and the checkpoint they reach.
    Changes(pb::Checkpoint, pb::FollowChanges),
    /// Not carried (too many, another epoch, a failure): the caller
    /// fetches them.
    Not,
}

/// Reads the changes since `since` for one stream, as `request` (its
/// caller's name, audience and token, checked in the same snapshot) asks
/// for them; `current`, when known, is the checkpoint they would reach.
/// A read is counted in `reads`.
pub async fn for_stream(
    store: &Store,
    reads: &ReadCounter,
    request: &export::Request,
    since: &pb::Checkpoint,
    current: Option<&pb::Checkpoint>,
) -> Carried {
    if current.is_some_and(|to| !within_reach(since, to)) {
        return Carried::Not;
    }
    reads.read();
    let request = export::Request {
        since: Some(since.clone()),
        ..request.clone()
    };
    let collected = match export::collect(store, &request, BOUNDS).await {
        Ok(collected) => collected,
        Err(e) => {
            tracing::debug!(error = %e, "follow: reading changes");
            return Carried::Not;
        }
    };
    match collected.reached() {
        Some(reached) if reached == since => Carried::Unchanged,
        Some(reached) => Carried::Changes(
            reached.clone(),
            pb::FollowChanges {
                since: Some(since.clone()),
                chunks: collected.for_audience(request.audience),
            },
        ),
        None => Carried::Not,
    }
}

/// The changes from one checkpoint to the next, read once for every
/// stream that asks for them.
#[derive(Debug)]
pub struct SharedChanges {
    /// Where the changes start.
    pub since: pb::Checkpoint,
    /// Where they end.
    pub reached: pb::Checkpoint,
    /// The changes as every peer would get them; `None` when they are not
    /// carried.
    collected: Option<Collected>,
}

impl SharedChanges {
    /// Reads the changes of this registry (`registry_name`) from `since` on,
    /// now that its checkpoint is `current`, counting a read in `reads`.
    pub async fn read(
        store: &Store,
        reads: &ReadCounter,
        registry_name: &str,
        since: pb::Checkpoint,
        current: pb::Checkpoint,
    ) -> SharedChanges {
        let not_carried = |since, reached| SharedChanges {
            since,
            reached,
            collected: None,
        };
        if !within_reach(&since, &current) {
            return not_carried(since, current);
        }
        let request = export::Request {
            registry_name: registry_name.to_owned(),
            audience: Audience::EveryPeer,
            since: Some(since.clone()),
            // Each stream's token ends it through its stream slot.
            token_id: None,
            only: None,
        };
        reads.read();
        let collected = match export::collect(store, &request, BOUNDS).await {
            Ok(collected) => collected,
            Err(e) => {
                tracing::debug!(error = %e, "follow: reading the shared changes");
                return not_carried(since, current);
            }
        };
        match collected.reached() {
            Some(reached) => SharedChanges {
                since,
                reached: reached.clone(),
                collected: Some(collected),
            },
            None => not_carried(since, current),
        }
    }

    /// The changes as a stream for `audience` carries them, if carried.
    pub fn for_audience(&self, audience: Audience) -> Option<pb::FollowChanges> {
        let collected = self.collected.as_ref()?;
        Some(pb::FollowChanges {
            since: Some(self.since.clone()),
            chunks: collected.for_audience(audience),
        })
    }
}
