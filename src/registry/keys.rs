//! Keys: the translations of a key (a peer's message → its fields, checked
//! by the same rules as an admin's; fields → the message served to peers
//! and the admin API's message) and the admin API's operations (create for
//! a local person, read, update, delete).
//!
//! Every key belongs to one person. A key is validated for its type
//! ([`validate::ssh_key`]) whenever its type or its text changes.

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, persons, validate};
use crate::store::cache::{KeyFieldChanges, KeyFields};
use crate::store::keys::{self, KeyRow, NewKey};
use crate::store::{DbConn, Store};

/// Key type of a new key when the request leaves it empty.
const DEFAULT_KEY_TYPE: &str = "ssh";

/// Builds `$target` from `$src`, copying the columns a key's fields share
/// by name and type with its peer and admin messages and its create
/// request (and, as `optional`, its update request): none yet, each of
/// them is set apart by one of those.
macro_rules! key_fields {
    ($src:ident => $($target:tt)*) => {
        copy_fields!([] $src => $($target)*)
    };
}

/// A key's fields checked by the rules every key obeys, whether an admin
/// writes it or a peer sends it; normalised.
pub fn checked(mut f: KeyFields) -> Result<KeyFields> {
    f.key = validate::ssh_key("key", &f.key_type, &f.key)?;
    Ok(f)
}

/// The fields of a key a peer sent, [`checked`].
pub fn from_peer(k: pb::ExportedKey) -> Result<KeyFields> {
    checked(key_fields!(k => KeyFields {
        sync_digest: None,
        key_type: k.key_type,
        key: k.key,
        is_blacklisted: k.is_blacklisted,
    }))
}

/// A local key as it is served to peers.
pub fn to_peer(key_id: i64, f: KeyFields) -> pb::ExportedKey {
    key_fields!(f => pb::ExportedKey {
        key_id,
        key_type: f.key_type,
        key: f.key,
        is_blacklisted: f.is_blacklisted,
    })
}

/// The admin API's message of a stored key with its owner.
pub fn to_message(row: KeyRow, owner: Option<i64>) -> pb::Key {
    let f = row.fields;
    key_fields!(f => pb::Key {
        key_id: row.key_id,
        key_type: f.key_type,
        key: f.key,
        is_blacklisted: f.is_blacklisted,
        person_id: owner.unwrap_or_default(),
        origin: registry::origin(row.peer_id, row.peer_key_id),
    })
}

/// Reads a key's owner and returns the key as a message.
pub async fn load(conn: &mut DbConn, row: KeyRow) -> Result<pb::Key> {
    let owner = keys::owners(conn, &[row.key_id]).await?.remove(&row.key_id);
    Ok(to_message(row, owner))
}

/// The key with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, key_id: i64) -> Result<KeyRow> {
    keys::by_id(conn, key_id)
        .await?
        .ok_or_else(|| Error::not_found("key", "key_id", key_id))
}

/// Creates a key for a local person.
pub async fn create(store: &Store, req: pb::CreateKeyRequest) -> Result<pb::Key> {
    let key_type = match req.key_type.trim() {
        "" => DEFAULT_KEY_TYPE,
        other => other,
    };
    let key = NewKey {
        peer_id: None,
        peer_key_id: None,
        fields: checked(key_fields!(req => KeyFields {
        sync_digest: None,
            key_type: key_type.to_owned(),
            key: req.key,
            is_blacklisted: false,
        }))?,
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            persons::require_local(c, req.person_id).await?;
            let row = keys::insert(c, &key).await?;
            keys::set_owner(c, row.key_id, req.person_id).await?;
            Ok(to_message(row, Some(req.person_id)))
        })
    })
    .await
}

/// Gets a key by id.
pub async fn get(store: &Store, req: pb::GetKeyRequest) -> Result<pb::Key> {
    let mut conn = store.read().await?;
    let row = require(&mut conn, req.key_id).await?;
    load(&mut conn, row).await
}

/// Lists keys.
pub async fn list(store: &Store, req: pb::ListRequest) -> Result<pb::ListKeysResponse> {
    let (keys, next_page_token) = registry::list::<KeyRow, _>(store, &req, to_message).await?;
    Ok(pb::ListKeysResponse {
        keys,
        next_page_token,
    })
}

/// Changes a local key; a new type or text is validated with the other
/// half (the new one or the current one).
pub async fn update(store: &Store, req: pb::UpdateKeyRequest) -> Result<pb::Key> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, req.key_id).await?;
            registry::require_local("key", &current.key_id.to_string(), current.peer_id)?;
            let mut changes = key_fields!(req => KeyFieldChanges {
                sync_digest: None,
                key_type: None,
                key: None,
                is_blacklisted: req.is_blacklisted,
            });
            if req.key_type.is_some() || req.key.is_some() {
                let key_type = req
                    .key_type
                    .unwrap_or_else(|| current.fields.key_type.clone());
                let key = validate::ssh_key(
                    "key",
                    &key_type,
                    req.key.as_ref().unwrap_or(&current.fields.key),
                )?;
                changes.key_type = Some(key_type);
                changes.key = Some(key);
            }
            // An update that sets nothing changes nothing (an empty SET is
            // not valid SQL).
            let row = if changes.is_empty() {
                current
            } else {
                keys::update(c, req.key_id, &changes).await?
            };
            load(c, row).await
        })
    })
    .await
}

/// Deletes a local key.
pub async fn delete(store: &Store, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, req.id).await?;
            registry::require_local("key", &current.key_id.to_string(), current.peer_id)?;
            keys::delete(c, req.id).await?;
            Ok(pb::DeleteResponse {})
        })
    })
    .await
}
