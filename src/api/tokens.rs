//! `fedreg.v1.TokenService`: API tokens.

use std::sync::Arc;

use super::sessions::Sessions;
use crate::error::Result;
use crate::proto::v1 as pb;
use crate::proto::v1::token_service_server::TokenService;
use crate::registry;
use crate::store::Store;
use crate::store::tokens::{self, Role, TokenRow};

/// Manages tokens for admins.
#[derive(Clone)]
pub struct TokenApi {
    store: Store,
    sessions: Arc<Sessions>,
}

impl TokenApi {
    /// A service over `store`; a revoked token is forgotten by `sessions`,
    /// which ends its streams.
    pub fn new(store: Store, sessions: Arc<Sessions>) -> TokenApi {
        TokenApi { store, sessions }
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
    let name = crate::registry::validate::token_name(&req.name)?;
    let mut conn = store.write().await?;
    let (token, row) = tokens::create(&mut conn, &name, role, req.peer_id).await?;
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

async fn revoke(
    store: &Store,
    sessions: &Sessions,
    req: pb::RevokeTokenRequest,
) -> Result<pb::RevokeTokenResponse> {
    let mut conn = store.write().await?;
    tokens::revoke(&mut conn, req.token_id).await?;
    drop(conn);
    sessions.revoke(req.token_id);
    Ok(pb::RevokeTokenResponse {})
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: tonic::Request<pb::CreateTokenRequest>,
    ) -> Result<tonic::Response<pb::CreateTokenResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            create(&self.store, request.into_inner()).await?,
        ))
    }

    async fn list_tokens(
        &self,
        request: tonic::Request<pb::ListTokensRequest>,
    ) -> Result<tonic::Response<pb::ListTokensResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            list(&self.store, request.into_inner()).await?,
        ))
    }

    async fn revoke_token(
        &self,
        request: tonic::Request<pb::RevokeTokenRequest>,
    ) -> Result<tonic::Response<pb::RevokeTokenResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            revoke(&self.store, &self.sessions, request.into_inner()).await?,
        ))
    }
}
