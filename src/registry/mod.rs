//! The operations of the admin API: validation, read-only rules for foreign
//! objects, and the transactions that apply each change.
//!
//! Operations take the generated request messages as their input (they are
//! plain data) and return the generated object messages, so the gRPC
//! services stay one line per method. One module per class of object,
//! which also holds the class's translations: a peer's message → its
//! fields (checked by the same rules as an admin's), fields → the message
//! served to peers, stored row → the admin API's message.
//!
//! The columns a class's fields struct shares with all of its messages
//! (same name, same type) are listed once per class, in a macro of its
//! module (`site_fields!`, ...) that `copy_fields!` expands: a new plain
//! column is its schema, its entry in the fields struct
//! ([`crate::store::cache`]) and its entry in that list.

/// Builds the struct `$target` from the variable `$src`: each field in the
/// brackets is moved from `$src` (both have it, with the same name and
/// type), then the fields written in the braces are set as in any struct
/// expression. `copy_fields!([name, url] req => pb::Site { site_id: 1 })`
/// is `pb::Site { name: req.name, url: req.url, site_id: 1 }`.
macro_rules! copy_fields {
    ([$($field:ident),* $(,)?] $src:ident => $($target:ident)::+ { $($rest:tt)* }) => {
        $($target)::+ { $($field: $src.$field,)* $($rest)* }
    };
}

pub mod invitations;
pub mod keys;
pub mod nodes;
pub mod peers;
pub mod persons;
pub mod sites;
pub mod slices;
pub mod tokens;
pub mod validate;

use prost_types::Timestamp;

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::store::Store;
use crate::store::listing::{Listed, Origin, Page};

/// Default and largest page sizes of listings.
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_PAGE_SIZE: i32 = 1000;

/// Turns a [`pb::ListRequest`] into a store [`Page`].
pub fn page(req: &pb::ListRequest) -> Result<Page> {
    let origin = match (req.peer_id, pb::Scope::try_from(req.scope)) {
        (Some(peer_id), Ok(pb::Scope::Unspecified | pb::Scope::Foreign)) => Origin::Peer(peer_id),
        (Some(peer_id), Ok(pb::Scope::Local)) => {
            return Err(Error::invalid(
                "peer_id",
                peer_id,
                "cannot be combined with scope SCOPE_LOCAL",
            ));
        }
        (None, Ok(pb::Scope::Unspecified)) => Origin::All,
        (None, Ok(pb::Scope::Local)) => Origin::Local,
        (None, Ok(pb::Scope::Foreign)) => Origin::Foreign,
        (_, Err(_)) => return Err(Error::invalid("scope", req.scope, "unknown scope")),
    };
    let limit = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            return Err(Error::invalid(
                "page_size",
                n,
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            ));
        }
    };
    let after_id = if req.page_token.is_empty() {
        0
    } else {
        decode_page_token(&req.page_token)?
    };
    Ok(Page {
        origin,
        after_id,
        limit: i64::from(limit),
    })
}

/// The token of the page after one whose last id is `last_id`, or empty
/// when the page was not full (there is nothing after it).
pub fn next_page_token(page: &Page, returned: usize, last_id: Option<i64>) -> String {
    match last_id {
        Some(id) if returned as i64 == page.limit => hex::encode(format!("after:{id}")),
        _ => String::new(),
    }
}

fn decode_page_token(token: &str) -> Result<i64> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.strip_prefix("after:").and_then(|id| id.parse().ok()))
        .ok_or_else(|| {
            Error::invalid(
                "page_token",
                token,
                "not a token returned by a previous listing",
            )
        })
}

/// Fails with FAILED_PRECONDITION when `peer_id` says the object is foreign.
pub fn require_local(what: &str, name: &str, peer_id: Option<i64>) -> Result<()> {
    match peer_id {
        None => Ok(()),
        Some(peer) => Err(Error::FailedPrecondition(format!(
            "{what} {name} is cached from peer {peer} and is read-only here; change it at its authority"
        ))),
    }
}

/// The `Origin` message of an object, set when it is foreign.
pub fn origin(peer_id: Option<i64>, peer_object_id: Option<i64>) -> Option<pb::Origin> {
    Some(pb::Origin {
        peer_id: peer_id?,
        peer_object_id: peer_object_id?,
    })
}

/// Unix seconds as a protobuf timestamp.
pub fn timestamp(secs: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

/// A protobuf timestamp as Unix seconds.
pub fn seconds(ts: &Timestamp) -> i64 {
    ts.seconds
}

/// One page of a listing, each row with its relations, as messages; and
/// the token of the next page.
pub async fn list<R: Listed, M>(
    store: &Store,
    req: &pb::ListRequest,
    to_message: fn(R, R::Relations) -> M,
) -> Result<(Vec<M>, String)> {
    let page = page(req)?;
    let mut conn = store.read().await?;
    let rows = R::page(&mut conn, page).await?;
    let ids: Vec<i64> = rows.iter().map(R::id).collect();
    let mut relations = R::relations(&mut conn, &ids).await?;
    let next_page_token = next_page_token(&page, rows.len(), ids.last().copied());
    let messages = rows
        .into_iter()
        .map(|row| {
            let rel = relations.remove(&row.id()).unwrap_or_default();
            to_message(row, rel)
        })
        .collect();
    Ok((messages, next_page_token))
}
