//! fedreg: a federation service for testbed registries.
//!
//! A registry holds sites, persons (with keys and roles), nodes and slices.
//! Registries federate: each is the authority for its own objects and keeps a
//! read-only cache of its peers' objects. fedreg serves the local objects to
//! peers (`GetPeerData`, a server stream) and refreshes its cache of each peer
//! (`RefreshPeer`), atomically.
//!
//! Layers, data flowing one way:
//! - [`api`]: the gRPC surface (services, auth and logging layers, status mapping);
//! - [`registry`]: validation and the operations of the admin API;
//! - [`store`]: diesel repositories, one copy of each query for both backends;
//! - [`server`] and [`cli`]: process wiring, the `fedreg` command;
//! - [`client`]: a typed client of a server, for programs (see `examples/`);
//! - [`data_dir`]: the data directory and its private files;
//! - [`class`]: the classes of federated objects, and a map over them;
//! - [`listener`]: the accepted connections, capped and timed out.

pub mod api;
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
