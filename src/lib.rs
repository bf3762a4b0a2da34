//! fedreg: a federation service for testbed registries.
//!
//! A registry holds sites, persons (with keys and roles), nodes and slices.
//! Registries federate: each is the authority for its own objects and keeps a
//! read-only cache of its peers' objects. fedreg serves the local objects to
//! peers (`GetPeerData`, a server stream) and refreshes its cache of each peer
//! (`RefreshPeer`), atomically.
//!
//! Layers, data flowing one way: cli → server → api → peering → registry
//! → store. Every module, by layer:
//! - [`cli`]: the `fedreg` command (`serve`, `peer`, `refresh`, `token`,
//!   `status`), its tables and JSON ([`cli::table`], [`cli::json`]) and
//!   its client connection ([`cli::client`]);
//! - [`server`]: process wiring: the pool, the services, the background
//!   tasks; [`listener`]: the accepted connections, capped and timed out;
//!   [`data_dir`]: the data directory and its private files;
//! - [`api`]: the gRPC surface: the admin services ([`api::registry`],
//!   [`api::peers`], [`api::tokens`]), the peering service
//!   ([`api::peering`]), authentication ([`api::auth`],
//!   [`api::client_cert`], [`api::sessions`]), logging and the mapping of
//!   errors to statuses ([`api::logging`], [`api::status`]);
//! - [`peering`]: federation: the refresh pipeline ([`peering::fetch`] →
//!   [`peering::spool`] → [`peering::sync`], driven by
//!   [`peering::refresh`] under [`peering::lock`], cleaned and diffed by
//!   [`peering::diff`], reported by [`peering::report`]), the serving side
//!   ([`peering::export`], [`peering::announce`]), scheduling and following
//!   ([`peering::schedule`], [`peering::follow`]), the change log's upkeep
//!   ([`peering::compaction`]);
//! - [`registry`]: one module per class ([`registry::sites`], ...) holding
//!   its translations (a peer's message → the stored fields, checked by
//!   the same rules as an admin's; fields → the message served to peers;
//!   row → the admin API's message) and the admin API's operations on it;
//!   the peer records ([`registry::peers`]) and the tokens
//!   ([`registry::tokens`]); the shared checks in [`registry::validate`];
//!   listings through [`registry::list`];
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
//!   token), [`client`] (a typed client of a server, for programs; see
//!   `examples/`).
//!
//! Where each flow starts:
//! - serve: [`cli::serve`] → [`server::start`], which opens the store,
//!   runs the migrations and starts the gRPC services and background tasks;
//! - refresh: [`peering::refresh::Refresher`] (from `RefreshPeer`, the
//!   schedule or a follow) → [`peering::fetch`] into a spool →
//!   [`peering::sync::apply`] in one transaction;
//! - export: `GetPeerData` in [`api::peering`] → [`peering::export::stream`];
//! - follow: serving side `Follow` → [`peering::announce::stream`]; following
//!   side [`peering::follow::run`], which refreshes at each announced change.

pub mod api;
pub mod backoff;
pub mod channel;
pub mod class;
pub mod cli;
pub mod client;
pub mod data_dir;
pub mod error;
pub mod listener;
pub mod peering;
pub mod proto;
pub mod registry;
pub mod server;
pub mod store;
