//! The gRPC surface: services, the auth and logging layers, status mapping.
//!
//! Each service is a thin translation from a request message to a
//! `registry` or `peering` operation; cross-cutting concerns (who may call,
//! what gets logged) are tower layers wired once in [`crate::server`].

pub mod auth;
pub mod client_cert;
pub mod enrollment;
pub mod logging;
pub mod peering;
pub mod peers;
pub mod registry;
pub mod sessions;
pub mod status;
pub mod tokens;

/// Implements a generated service trait by handing each request message to
/// an operation `fn(&Store, Request) -> Result<Response>`.
macro_rules! delegate_service {
    ($service:ty, $trait:path { $( $method:ident($req:ty) -> $resp:ty => $op:path; )* }) => {
        #[tonic::async_trait]
        impl $trait for $service {
            $(
                async fn $method(
                    &self,
                    request: tonic::Request<$req>,
                ) -> Result<tonic::Response<$resp>, tonic::Status> {
                    $op(&self.store, request.into_inner())
                        .await
                        .map(tonic::Response::new)
                        .map_err(tonic::Status::from)
                }
            )*
        }
    };
}
pub(crate) use delegate_service;
