//! stockpulse: a real-time stock ledger and alert server for live-stream commerce.
//!
//! # Layout
//!
//! - [`ledger`]: every SKU's stock, every order's life cycle, rooms, their listings' tallies
//!   and the SKUs' show histories, in memory, sans I/O.
//! - [`clock`]: the time the server runs on, injectable for tests.
//! - [`journal`]: the facts on disk: group commit, snapshots, recovery, and the replicated
//!   log's framing.
//! - [`alert`]: the alert engine: levels, dynamic thresholds, forecasts, hints and room views,
//!   from durable facts.
//! - [`notify`]: alert delivery to webhook, SMS and voice gateways through a persisted outbox.
//! - [`cluster`]: the NATS JetStream log, the leader lease and shared snapshots.
//! - `hub`: topics and the push of every durable change to WebSocket sessions.
//! - `api`: the HTTP and WebSocket edge (JSON and MessagePack in and out, errors, access,
//!   metrics, the OpenAPI and AsyncAPI documents, the post-show review, the pages).
//! - [`auth`]: tokens, roles and what each may do.
//! - [`edge`]: accepting connections within limits and serving each with hyper.
//! - [`config`]: settings from a TOML file, the environment and flags.
//! - [`server`]: binds it together: [`server::run`] serves a bound listener until shutdown.
//! - `demo`: the simulated show behind `--demo`.
//! - [`fuzzing`]: every decoder of outside bytes behind one door, for property tests and fuzz
//!   targets.
//!
//! `docs/ARCHITECTURE.md` is the map.

pub mod alert;
pub mod auth;
pub mod channels;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod fuzzing;
pub mod journal;
pub mod ledger;
pub mod notify;
pub mod server;

mod api;
mod demo;

/// The connectors `--demo` points at its own stand-in platforms listening on `address`.
pub fn demo_stand_in_connectors(address: std::net::SocketAddr) -> Vec<channels::ChannelConfig> {
    demo::stand_in::connectors(address)
}
mod hub;

/// The `/ws` protocol as an AsyncAPI 3.0 document, as `/api/asyncapi.json` serves it.
pub use api::asyncapi;
