//! Objects for tests, made through the admin API: sites, nodes and slices
//! with default fields, and a registry that caches a peer's objects (made
//! at the peer and fetched by a real refresh) to test the read-only rules.

use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::{self as pb, get_node_request, get_site_request, get_slice_request};

use super::federation::{peer_one_way, refresh};
use super::{Authed, Backend, TestServer};

/// An admin client of the registry API.
pub type Api = RegistryServiceClient<Authed>;

/// Creates a site; returns its id.
pub async fn site(api: &mut Api, login_base: &str) -> i64 {
    api.create_site(pb::CreateSiteRequest {
        login_base: login_base.into(),
        name: format!("Site {login_base}"),
        ..Default::default()
    })
    .await
    .expect("create site")
    .into_inner()
    .site_id
}

/// A request for a node with default fields.
pub fn new_node(site_id: i64, hostname: &str) -> pb::CreateNodeRequest {
    pb::CreateNodeRequest {
        site_id,
        hostname: hostname.into(),
        ..Default::default()
    }
}

/// Creates a node; returns its id.
pub async fn node(api: &mut Api, site_id: i64, hostname: &str) -> i64 {
    api.create_node(new_node(site_id, hostname))
        .await
        .expect("create node")
        .into_inner()
        .node_id
}

/// Creates a slice named `name` (its prefix an existing site); returns its id.
pub async fn slice(api: &mut Api, name: &str) -> i64 {
    api.create_slice(pb::CreateSliceRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .expect("create slice")
    .into_inner()
    .slice_id
}

/// Gets a site by id.
pub async fn get_site(api: &mut Api, site_id: i64) -> Result<pb::Site, tonic::Status> {
    api.get_site(pb::GetSiteRequest {
        key: Some(get_site_request::Key::SiteId(site_id)),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Gets a node by id.
pub async fn get_node(api: &mut Api, node_id: i64) -> Result<pb::Node, tonic::Status> {
    api.get_node(pb::GetNodeRequest {
        key: Some(get_node_request::Key::NodeId(node_id)),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Gets a node by hostname.
pub async fn node_named(api: &mut Api, hostname: &str) -> pb::Node {
    api.get_node(pb::GetNodeRequest {
        key: Some(get_node_request::Key::Hostname(hostname.into())),
    })
    .await
    .unwrap_or_else(|s| panic!("node {hostname}: {s:?}"))
    .into_inner()
}

/// Gets a slice by id.
pub async fn get_slice(api: &mut Api, slice_id: i64) -> Result<pb::Slice, tonic::Status> {
    api.get_slice(pb::GetSliceRequest {
        key: Some(get_slice_request::Key::SliceId(slice_id)),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Gets a slice by name.
pub async fn slice_named(api: &mut Api, name: &str) -> pb::Slice {
    api.get_slice(pb::GetSliceRequest {
        key: Some(get_slice_request::Key::Name(name.into())),
    })
    .await
    .unwrap_or_else(|s| panic!("slice {name}: {s:?}"))
    .into_inner()
}

/// A registry (`local`, "plc1") that caches the objects of a peer
/// (`peer`, "plc2"): make objects at the peer, then [`WithPeer::refresh`].
pub struct WithPeer {
    /// The registry under test.
    pub local: TestServer,
    /// Its peer, the authority of the foreign objects.
    pub peer: TestServer,
    /// The peer's id on `local`.
    pub peer_id: i64,
}

impl WithPeer {
    /// Starts both registries and peers `local` with `peer`.
    pub async fn start(backend: Backend) -> WithPeer {
        let local = TestServer::start_named(backend, "plc1").await;
        let peer = TestServer::start_named(backend, "plc2").await;
        let peer_id = peer_one_way(&local, "plc1", &peer, "plc2").await;
        WithPeer {
            local,
            peer,
            peer_id,
        }
    }

    /// Caches the peer's current objects on `local`.
    pub async fn refresh(&self) -> pb::RefreshReport {
        refresh(&self.local, self.peer_id).await
    }
}
