//! `fedreg.v1.TokenService`: API tokens, for admins; the operations are
//! [`crate::registry::tokens`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::sessions::Sessions;
use crate::proto::v1 as pb;
use crate::proto::v1::token_service_server::TokenService;
use crate::registry::tokens;
use crate::store::Store;

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

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        Ok(Response::new(
            tokens::create(&self.store, request.into_inner()).await?,
        ))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(
            tokens::list(&self.store, request.into_inner()).await?,
        ))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let revoked = |token_id| self.sessions.revoke(token_id);
        Ok(Response::new(
            tokens::revoke(&self.store, request.into_inner(), revoked).await?,
        ))
    }
}
