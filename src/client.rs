//! A typed client of a fedreg server, for programs that call it over gRPC.
//!
//! [`Client::connect`] opens one channel to a server (a URL, an optional
//! token sent as `authorization: Bearer <token>`, and for `https://` URLs
//! the PEM certificate of the CA that signed the server's certificate).
//! The channel is shared by every service client it hands out
//! ([`Client::registry`], [`Client::peers`], [`Client::tokens`],
//! [`Client::peering`]), and by the few calls that are more than one RPC:
//! listings as streams that fetch page after page ([`Client::sites`],
//! [`Client::list_peers`], and [`paginate`] for any other listing), a
//! refresh ([`Client::refresh_peer`]) and a Follow stream
//! ([`Client::follow`]). The messages are those of [`crate::proto::v1`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::TryStreamExt;
//! let client = fedreg::client::Client::connect("http://127.0.0.1:50051", Some("TOKEN"), None).await?;
//! let sites: Vec<_> = client.sites(Default::default()).try_collect().await?;
//! println!("{} sites", sites.len());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, TryStreamExt, stream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub use crate::channel::{Authed, Bearer};
use crate::error::{Error, chain};
use crate::proto::v1 as pb;
pub use crate::registry::peers::PeerKey;
use pb::peer_service_client::PeerServiceClient;
use pb::peering_service_client::PeeringServiceClient;
use pb::registry_service_client::RegistryServiceClient;
use pb::token_service_client::TokenServiceClient;

/// Longest wait for the connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted (peer listings carry their last reports).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Objects asked for per page by the streaming listings.
const PAGE_SIZE: i32 = 1000;

/// A connection to a fedreg server.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Authed,
}

impl Client {
    /// Connects to the server at `url` (`http://host:port`, or
    /// `https://host:port` with `ca_pem`, the PEM certificate of the CA that
    /// verifies the server's), sending `token` with every call.
    ///
    /// Fails with [`Error::InvalidArgument`] for a bad URL, token or
    /// certificate, and [`Error::Unavailable`] when the server cannot be
    /// reached.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, Error> {
        let bearer = Bearer::new(token)
            .map_err(|_| Error::invalid("token", "(hidden)", "not a valid header value"))?;
        let channel = channel(url.trim(), ca_pem).await?;
        Ok(Client {
            channel: InterceptedService::new(channel, bearer),
        })
    }

    /// The channel itself, for calls the typed clients do not make (a
    /// method known only at run time, through reflection).
    pub fn channel(&self) -> Authed {
        self.channel.clone()
    }

    /// The registry API: sites, persons, keys, nodes, slices.
    pub fn registry(&self) -> RegistryServiceClient<Authed> {
        RegistryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The peer-management API (admin tokens).
    pub fn peers(&self) -> PeerServiceClient<Authed> {
        PeerServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The token API (admin tokens).
    pub fn tokens(&self) -> TokenServiceClient<Authed> {
        TokenServiceClient::new(self.channel.clone())
    }

    /// The API a registry serves its peers: `GetPeerData` and `Follow`.
    pub fn peering(&self) -> PeeringServiceClient<Authed> {
        PeeringServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Every site that `request` selects (its scope and peer), fetching
    /// pages as the stream is read; `request.page_size` is the page size
    /// (0: 1000).
    pub fn sites(&self, request: pb::ListRequest) -> impl Stream<Item = Result<pb::Site, Status>> {
        let registry = self.registry();
        let size = if request.page_size == 0 {
            PAGE_SIZE
        } else {
            request.page_size
        };
        paginate(move |page_token| {
            let mut registry = registry.clone();
            let request = pb::ListRequest {
                page_size: size,
                page_token,
                ..request
            };
            async move {
                let page = registry.list_sites(request).await?.into_inner();
                Ok((page.sites, page.next_page_token))
            }
        })
    }

    /// Every peer of the server, in id order, fetching pages as the stream
    /// is read.
    pub fn list_peers(&self) -> impl Stream<Item = Result<pb::Peer, Status>> {
        let peers = self.peers();
        paginate(move |page_token| {
            let mut peers = peers.clone();
            async move {
                let page = peers
                    .list_peers(pb::ListPeersRequest {
                        page_size: PAGE_SIZE,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((page.peers, page.next_page_token))
            }
        })
    }

    /// Refreshes the server's cache of `peer` and returns the report; with
    /// `full`, fetches everything rather than the changes since the last
    /// refresh; with `force`, applies even past the mass-delete guard.
    pub async fn refresh_peer(
        &self,
        peer: PeerKey,
        force: bool,
        full: bool,
    ) -> Result<pb::RefreshReport, Status> {
        let request = pb::RefreshPeerRequest {
            peer: Some(peer.into()),
            force,
            full,
            verify: false,
        };
        Ok(self.peers().refresh_peer(request).await?.into_inner())
    }

    /// Refreshes a peer from its checkpoint, then verifies the cache
    /// against the peer's digests and repairs what differs (the report's
    /// `verify` says what); with `force`, applies the repair even past the
    /// mass-delete guard.
    pub async fn verify_peer(
        &self,
        peer: PeerKey,
        force: bool,
    ) -> Result<pb::RefreshReport, Status> {
        let request = pb::RefreshPeerRequest {
            peer: Some(peer.into()),
            force,
            full: false,
            verify: true,
        };
        Ok(self.peers().refresh_peer(request).await?.into_inner())
    }

    /// Follows the server's changes: a stream whose first event tells its
    /// current checkpoint (or whether it moved past `since`), then one
    /// event per batch of commits and a heartbeat every `heartbeat_seconds`
    /// (0: 10) of silence. Needs a peer or an admin token.
    pub async fn follow(
        &self,
        since: Option<pb::Checkpoint>,
        heartbeat_seconds: u32,
    ) -> Result<Streaming<pb::FollowEvent>, Status> {
        let request = pb::FollowRequest {
            since,
            heartbeat_seconds,
            include_changes: false,
        };
        Ok(self.peering().follow(request).await?.into_inner())
    }
}

/// The items of a paged listing as one stream: `fetch(page_token)` returns
/// a page and the next page's token (empty after the last page); it is
/// called with an empty token first, then only when the previous page has
/// been read. The stream ends after the first error.
pub fn paginate<T, F, Fut>(fetch: F) -> impl Stream<Item = Result<T, Status>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Status>>,
{
    // The state is the next page's token, or `None` after the last page.
    stream::try_unfold(
        (fetch, Some(String::new())),
        |(mut fetch, token)| async move {
            let Some(token) = token else {
                return Ok::<_, Status>(None);
            };
            let (items, next) = fetch(token).await?;
            let next = (!next.is_empty()).then_some(next);
            Ok(Some((
                stream::iter(items.into_iter().map(Ok)),
                (fetch, next),
            )))
        },
    )
    .try_flatten()
}

/// Opens a channel to `url`, verifying TLS with `ca_pem`.
async fn channel(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, Error> {
    let bad = |reason: String| Error::invalid("server", url, reason);
    match (url.split_once("://").map(|(scheme, _)| scheme), ca_pem) {
        (Some("https"), Some(_)) | (Some("http"), None) => {}
        (Some("https"), None) => {
            return Err(bad(
                "an https:// server needs a CA certificate (--cacert)".into()
            ));
        }
        (Some("http"), Some(_)) => {
            return Err(bad(
                "a CA certificate (--cacert) is for https:// servers only".into(),
            ));
        }
        _ => return Err(bad("must be http://host:port or https://host:port".into())),
    }
    crate::channel::endpoint(url, ca_pem, None, CONNECT_TIMEOUT)
        .map_err(|e| bad(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach {url}: {}", chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn paginate_reads_every_page_in_order_and_stops_at_an_error() {
        // Pages of two numbers; "4" answers an error.
        let fetch = |token: String| async move {
            let start: i32 = if token.is_empty() {
                0
            } else {
                token.parse().unwrap()
            };
            if start == 4 {
                return Err(Status::internal("page 3"));
            }
            Ok((vec![start, start + 1], (start + 2).to_string()))
        };
        let items: Vec<Result<i32, Status>> = paginate(fetch).collect().await;
        let ok: Vec<i32> = items
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(ok, [0, 1, 2, 3]);
        assert_eq!(items.len(), 5);
        assert!(items[4].is_err());

        let last = |token: String| async move {
            Ok::<_, Status>(if token.is_empty() {
                (vec!["a"], "next".to_owned())
            } else {
                (vec!["b"], String::new())
            })
        };
        let all: Vec<&str> = paginate(last).try_collect().await.unwrap();
        assert_eq!(all, ["a", "b"]);
    }
}
