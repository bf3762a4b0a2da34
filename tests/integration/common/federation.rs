//! Federation helpers: peering test servers both ways, refreshing, and
//! counting local and foreign objects through the admin API.

pub use fedreg::peering::report::writes;
use fedreg::proto::v1 as pb;

use super::TestServer;

/// Makes `b` a peer of `a`: a peer record for `b` on `a`, holding a peer
/// token that `b` issued for `a`. Returns the id of `b`'s record on `a`
/// and the id of `a`'s record on `b` (created when missing).
pub async fn peer_one_way(a: &TestServer, a_name: &str, b: &TestServer, b_name: &str) -> i64 {
    let a_on_b = ensure_peer(b, a_name, &a.url()).await;
    let token = b
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: format!("{a_name} pulls from {b_name}"),
            role: "peer".into(),
            peer_id: Some(a_on_b),
        })
        .await
        .expect("peer token")
        .into_inner()
        .token;
    let b_on_a = ensure_peer(a, b_name, &b.url()).await;
    a.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id: b_on_a,
            outbound_token: Some(token),
            ..Default::default()
        })
        .await
        .expect("set outbound token");
    b_on_a
}

/// Peers `a` and `b` both ways; returns (b's id on a, a's id on b).
pub async fn peer_both_ways(
    a: &TestServer,
    a_name: &str,
    b: &TestServer,
    b_name: &str,
) -> (i64, i64) {
    let b_on_a = peer_one_way(a, a_name, b, b_name).await;
    let a_on_b = peer_one_way(b, b_name, a, a_name).await;
    (b_on_a, a_on_b)
}

async fn ensure_peer(on: &TestServer, name: &str, url: &str) -> i64 {
    let mut peers = on.peers().await;
    if let Ok(found) = peers
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::Peername(name.into())),
        })
        .await
    {
        return found.into_inner().peer_id;
    }
    peers
        .create_peer(pb::CreatePeerRequest {
            peername: name.into(),
            peer_url: url.into(),
            ..Default::default()
        })
        .await
        .expect("create peer")
        .into_inner()
        .peer_id
}

/// The peer record of `peer_id` on `on`.
pub async fn get_peer(on: &TestServer, peer_id: i64) -> pb::Peer {
    on.peers()
        .await
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(peer_id)),
        })
        .await
        .expect("get peer")
        .into_inner()
}

/// Refreshes peer `peer_id` on `on`, expecting success.
pub async fn refresh(on: &TestServer, peer_id: i64) -> pb::RefreshReport {
    try_refresh(on, peer_id, false)
        .await
        .unwrap_or_else(|s| panic!("refresh of peer {peer_id} failed: {s:?}"))
}

/// Refreshes peer `peer_id` on `on` with everything the peer has (not
/// only the changes since the checkpoint), expecting success.
pub async fn refresh_full(on: &TestServer, peer_id: i64) -> pb::RefreshReport {
    request_refresh(on, peer_id, false, true)
        .await
        .unwrap_or_else(|s| panic!("full refresh of peer {peer_id} failed: {s:?}"))
}

/// Refreshes peer `peer_id` on `on`.
pub async fn try_refresh(
    on: &TestServer,
    peer_id: i64,
    force: bool,
) -> Result<pb::RefreshReport, tonic::Status> {
    request_refresh(on, peer_id, force, false).await
}

/// Refreshes peer `peer_id` on `on`, forced or not, full or not.
pub async fn request_refresh(
    on: &TestServer,
    peer_id: i64,
    force: bool,
    full: bool,
) -> Result<pb::RefreshReport, tonic::Status> {
    on.peers()
        .await
        .refresh_peer(pb::RefreshPeerRequest {
            peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
            force,
            full,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The class report of `class` in `report`.
pub fn class<'a>(report: &'a pb::RefreshReport, class: &str) -> &'a pb::ClassReport {
    report
        .classes
        .iter()
        .find(|c| c.class == class)
        .unwrap_or_else(|| panic!("no class {class} in {report:?}"))
}

/// The relation report of `relation` in `report`.
pub fn relation<'a>(report: &'a pb::RefreshReport, relation: &str) -> &'a pb::RelationReport {
    report
        .relations
        .iter()
        .find(|r| r.relation == relation)
        .unwrap_or_else(|| panic!("no relation {relation} in {report:?}"))
}

/// Counts of one kind of object on a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Objects this registry is the authority for.
    pub local: usize,
    /// Objects cached from peers.
    pub foreign: usize,
}

/// Lists every page of a listing RPC and returns the items.
#[macro_export]
macro_rules! list_all {
    ($server:expr, $method:ident, $field:ident, $scope:expr) => {{
        let mut api = $server.registry().await;
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let page = api
                .$method(fedreg::proto::v1::ListRequest {
                    scope: $scope as i32,
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            items.extend(page.$field);
            if page.next_page_token.is_empty() {
                break items;
            }
            token = page.next_page_token;
        }
    }};
}

/// Local and foreign counts of a kind, through its listing RPC.
#[macro_export]
macro_rules! counts {
    ($server:expr, $method:ident, $field:ident) => {
        $crate::common::federation::Counts {
            local: $crate::list_all!($server, $method, $field, fedreg::proto::v1::Scope::Local)
                .len(),
            foreign: $crate::list_all!($server, $method, $field, fedreg::proto::v1::Scope::Foreign)
                .len(),
        }
    };
}

/// An OpenSSH ed25519 public key line with key bytes made from `seed`
/// (distinct seeds give distinct keys).
pub fn ssh_key(seed: usize, comment: &str) -> String {
    use base64::Engine;
    let key_bytes: Vec<u8> = (seed as u64).to_be_bytes().repeat(4);
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], &key_bytes[..]] {
        blob.extend((part.len() as u32).to_be_bytes());
        blob.extend(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("ssh-ed25519 {b64} {comment}")
}

/// Local ids of what a [`Populate`] created.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// Site ids.
    pub sites: Vec<i64>,
    /// Person ids.
    pub persons: Vec<i64>,
    /// Key ids.
    pub keys: Vec<i64>,
}

/// Objects to create through the admin API, named after a prefix: sites
/// (`<prefix><n>`), and enabled persons `user<n>@<prefix>.example.org`
/// with role user, person n at site `n mod sites` (primary) when there are
/// sites, each with its keys. Nothing unless asked:
/// `Populate::new("two").sites(2).persons(3).keys_per_person(1).on(&server)`.
#[derive(Debug, Clone)]
pub struct Populate {
    prefix: String,
    sites: Sites,
    persons: usize,
    keys_per_person: usize,
}

/// The sites of a [`Populate`].
#[derive(Debug, Clone)]
enum Sites {
    /// This many new ones.
    New(usize),
    /// These, already there.
    Existing(Vec<i64>),
}

impl Populate {
    /// Nothing yet, named after `prefix`.
    pub fn new(prefix: &str) -> Populate {
        Populate {
            prefix: prefix.to_owned(),
            sites: Sites::New(0),
            persons: 0,
            keys_per_person: 0,
        }
    }

    /// `count` new sites.
    pub fn sites(mut self, count: usize) -> Populate {
        self.sites = Sites::New(count);
        self
    }

    /// The persons go to these existing sites instead of new ones.
    pub fn at_sites(mut self, site_ids: &[i64]) -> Populate {
        self.sites = Sites::Existing(site_ids.to_vec());
        self
    }

    /// `count` persons.
    pub fn persons(mut self, count: usize) -> Populate {
        self.persons = count;
        self
    }

    /// `count` keys for each person.
    pub fn keys_per_person(mut self, count: usize) -> Populate {
        self.keys_per_person = count;
        self
    }

    /// Creates them on `server`.
    pub async fn on(self, server: &TestServer) -> Population {
        let sites = match self.sites {
            Sites::New(count) => create_sites(server, &self.prefix, count).await,
            Sites::Existing(ids) => ids,
        };
        let mut api = server.registry().await;
        let mut out = Population::default();
        for i in 0..self.persons {
            let person = api
                .create_person(pb::CreatePersonRequest {
                    email: format!("user{i}@{}.example.org", self.prefix),
                    first_name: "User".into(),
                    last_name: format!("{}{i}", self.prefix),
                    enabled: Some(true),
                    ..Default::default()
                })
                .await
                .expect("create person")
                .into_inner();
            api.add_role_to_person(pb::PersonRoleRequest {
                person_id: person.person_id,
                role_id: 30,
            })
            .await
            .expect("add role");
            if !sites.is_empty() {
                api.add_person_to_site(pb::PersonSiteRequest {
                    person_id: person.person_id,
                    site_id: sites[i % sites.len()],
                    is_primary: true,
                })
                .await
                .expect("add to site");
            }
            for k in 0..self.keys_per_person {
                let key = api
                    .create_key(pb::CreateKeyRequest {
                        person_id: person.person_id,
                        key_type: "ssh".into(),
                        key: ssh_key(i * 7 + k, &format!("{}{i}-{k}", self.prefix)),
                    })
                    .await
                    .expect("create key")
                    .into_inner();
                out.keys.push(key.key_id);
            }
            out.persons.push(person.person_id);
        }
        out.sites = sites;
        out
    }
}

/// Creates `count` sites with login_base `<prefix><n>`; returns their ids.
pub async fn create_sites(server: &TestServer, prefix: &str, count: usize) -> Vec<i64> {
    let mut api = server.registry().await;
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let site = api
            .create_site(pb::CreateSiteRequest {
                login_base: format!("{prefix}{i}"),
                name: format!("Site {i} of {prefix}"),
                ..Default::default()
            })
            .await
            .expect("create site")
            .into_inner();
        ids.push(site.site_id);
    }
    ids
}
