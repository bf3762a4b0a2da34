//! API tokens: created, listed and revoked by admins.
//!
//! A token's secret is returned once, at creation; the store keeps only
//! its hash. Revoking a token tells the caller's `revoked` callback, which
//! ends the streams open with it.

use crate::error::Result;
use crate::proto::v1 as pb;
use crate::registry::{self, validate};
use crate::store::Store;
use crate::store::tokens::{self, Role, TokenRow};

/// The message of a stored token.
pub fn to_message(row: TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: row.token_id,
        name: row.name,
        role: row.role,
        peer_id: row.peer_id,
        created: registry::timestamp(row.created),
        last_used: row.last_used.and_then(registry::timestamp),
    }
}

/// Creates a token; the response holds its secret.
pub async fn create(store: &Store, req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse> {
    let role = Role::parse(&req.role)?;
    let name = validate::token_name(&req.name)?;
    let mut conn = store.write().await?;
    let (token, row) = tokens::create(&mut conn, &name, role, req.peer_id).await?;
    Ok(pb::CreateTokenResponse {
        token,
        info: Some(to_message(row)),
    })
}

/// Lists the tokens (without their secrets).
pub async fn list(store: &Store, _req: pb::ListTokensRequest) -> Result<pb::ListTokensResponse> {
    let mut conn = store.read().await?;
    let tokens = tokens::list(&mut conn)
        .await?
        .into_iter()
        .map(to_message)
        .collect();
    Ok(pb::ListTokensResponse { tokens })
}

/// Revokes a token, then tells `revoked` its id once the change is
/// committed.
pub async fn revoke(
    store: &Store,
    req: pb::RevokeTokenRequest,
    revoked: impl FnOnce(i64),
) -> Result<pb::RevokeTokenResponse> {
    let mut conn = store.write().await?;
    tokens::revoke(&mut conn, req.token_id).await?;
    drop(conn);
    revoked(req.token_id);
    Ok(pb::RevokeTokenResponse {})
}
