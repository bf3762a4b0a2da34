//! `fedreg.v1.TokenService`: API tokens.

use crate::error::Result;
use crate::proto::v1 as pb;
use crate::proto::v1::token_service_server::TokenService;
use crate::registry;
use crate::store::Store;
use crate::store::tokens::{self, Role, TokenRow};

use super::delegate_service;

/// Manages tokens for admins.
#[derive(Clone)]
pub struct TokenApi {
    store: Store,
}

impl TokenApi {
    /// A service over `store`.
    pub fn new(store: Store) -> TokenApi {
        TokenApi { store }
    }
}

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

async fn create(store: &Store, req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse> {
    let role = Role::parse(&req.role)?;
    let mut conn = store.write().await?;
    let (token, row) = tokens::create(&mut conn, &req.name, role, req.peer_id).await?;
    Ok(pb::CreateTokenResponse {
        token,
        info: Some(to_message(row)),
    })
}

async fn list(store: &Store, _req: pb::ListTokensRequest) -> Result<pb::ListTokensResponse> {
    let mut conn = store.read().await?;
    let tokens = tokens::list(&mut conn)
        .await?
        .into_iter()
        .map(to_message)
        .collect();
    Ok(pb::ListTokensResponse { tokens })
}

async fn revoke(store: &Store, req: pb::RevokeTokenRequest) -> Result<pb::RevokeTokenResponse> {
    let mut conn = store.write().await?;
    tokens::revoke(&mut conn, req.token_id).await?;
    Ok(pb::RevokeTokenResponse {})
}

delegate_service!(TokenApi, TokenService {
    create_token(pb::CreateTokenRequest) -> pb::CreateTokenResponse => create;
    list_tokens(pb::ListTokensRequest) -> pb::ListTokensResponse => list;
    revoke_token(pb::RevokeTokenRequest) -> pb::RevokeTokenResponse => revoke;
});
