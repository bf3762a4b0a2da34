//! fedreg: a federation service for testbed registries.
//!
//! A registry holds sites, persons (with keys and roles), nodes and slices.
//! Registries federate: each is the authority for its own objects and keeps a
//! read-only cache of its peers' objects. fedreg serves the local objects to
//! peers (`GetPeerData`, a server stream) and refreshes its cache of each peer
//! (`RefreshPeer`), atomically.
//!
//! Layers, data flowing one way: cli → server → api → peering → metrics
//! → registry → store. Every module, by layer:
//! - [`cli`]: the `fedreg` command (`serve`, `peer` with `invite` and
//!   `join`, `refresh`, `token`, `status`, `call`, `config check`), its
//!   tables and JSON ([`cli::table`], [`cli::json`]), its client
//!   connection ([`cli::client`]) and its generic caller through
//!   reflection ([`cli::call`]);
//!   [`config`]: the configuration file and the peers it declares, which
//!   [`cli::config`] lays under the command line;
//! - [`server`]: process wiring: the pool, the services, the background
//!   tasks; [`listener`]: the accepted connections, capped and timed out
//!   ([`open_files`]: the open-file limit the cap stays within);
//!   [`data_dir`]: the data directory and its private files;
//! - [`api`]: the gRPC surface: the admin services ([`api::registry`],
//!   [`api::peers`], [`api::tokens`]), the peering service
//!   ([`api::peering`]), enrolment by invitation ([`api::enrollment`]),
//!   authentication ([`api::auth`],
//!   [`api::client_cert`], [`api::sessions`]), logging and the mapping of
//!   errors to statuses ([`api::logging`], [`api::status`]);
//! - [`peering`]: federation: the refresh pipeline ([`peering::fetch`] →
//!   [`peering::spool`] → [`peering::sync`], driven by
//!   [`peering::refresh`] under [`peering::lock`], cleaned and diffed by
//!   [`peering::diff`], reported by [`peering::report`]), the serving side
//!   ([`peering::export`], [`peering::announce`]), scheduling and following
//!   ([`peering::schedule`], [`peering::follow`]), the change log's upkeep
//!   ([`peering::compaction`]), joining a peer by invitation
//!   ([`peering::join`]);
//! - [`metrics`]: the Prometheus metrics, between peering and registry:
//!   recorded by api and peering (calls, refreshes, streams), read at
//!   scrape time from the follow tasks (through
//!   [`registry::peers::Following`]) and the store (peers, pools, change
//!   log), served by [`metrics::endpoint`];
//! - [`registry`]: one module per class ([`registry::sites`], ...) holding
//!   its translations (a peer's message → the stored fields, checked by
//!   the same rules as an admin's; fields → the message served to peers;
//!   row → the admin API's message) and the admin API's operations on it;
//!   the peer records ([`registry::peers`]), invitations to peer
//!   ([`registry::invitations`]) and the tokens ([`registry::tokens`]);
//!   the shared checks in [`registry::validate`]; listings through
//!   [`registry::list`];
//! - [`store`]: diesel repositories, one copy of each query for both
//!   backends: one module per table family (its row types embed the
//!   class's fields), the cache of peers' objects ([`store::cache`]: each
//!   class and relation table declared once, the loops over batches written
//!   once), memberships, listings, the change log ([`store::revisions`],
//!   [`store::changes`]);
//! - shared by all: [`class`] (the classes of federated objects, the
//!   relations between them, and maps over either), [`error`], [`proto`]
//!   (the generated messages), [`backoff`] (the delays between retries),
//!   [`channel`] (the client side of a connection: endpoint and bearer
//!   token), [`pinning`] (the certificate an invitation pins, and the CA a
//!   peer record keeps), [`client`] (a typed client of a server, for
//!   programs; see `examples/`).
//!
//! Where each flow starts:
//! - serve: [`cli::config::parse`] (flags, environment, configuration
//!   file) → [`cli::serve`] → [`server::start`], which opens the store,
//!   runs the migrations and starts the gRPC services and background tasks,
//!   then [`config::peers::apply`] declares the file's peers;
//! - refresh: [`peering::refresh::Refresher`] (from `RefreshPeer`, the
//!   schedule or a follow) → [`peering::fetch`] into a spool →
//!   [`peering::sync::apply`] in one transaction;
//! - export: `GetPeerData` in [`api::peering`] → [`peering::export::stream`];
//! - follow: serving side `Follow` → [`peering::announce::stream`], all
//!   streams waiting on one [`peering::announce::Checkpoints`]; following
//!   side [`peering::follow::run`], which refreshes at each announced change;
//! - metrics: `GET /metrics` in [`metrics::endpoint`] →
//!   [`metrics::sampled::Sampler::sample`] → [`metrics::Metrics::render`];
//! - peering by invitation: `CreateInvitation` →
//!   [`registry::invitations::create`] on the inviting side; `JoinPeer` →
//!   [`peering::join::join`] on the joining side, which calls the inviter's
//!   `Enroll` → [`registry::invitations::enroll`].

pub mod api;
pub mod backoff;
pub mod channel;
pub mod class;
pub mod cli;
pub mod client;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod open_files;
pub mod peering;
pub mod pinning;
pub mod proto;
pub mod registry;
pub mod server;
pub mod store;
