//! stockpulse: a real-time stock ledger and alert server for live-stream commerce.
//!
//! # Layout
//!
//! - [`ledger`]: every SKU's stock and every order's life cycle, in memory, sans I/O.
//! - [`clock`]: the time the server runs on, injectable for tests.
//! - [`journal`]: the facts on disk: group commit, snapshots, recovery.
//! - `hub`: topics and the push of every durable stock change to WebSocket sessions.
//! - `api`: the HTTP edge (JSON in and out, errors, metrics, OpenAPI).
//! - [`config`]: settings from a TOML file, the environment and flags.
//! - [`server`]: binds it together: [`server::run`] serves a bound listener until shutdown.
//! - `demo`: the simulated show behind `--demo`.
//! - [`load`]: the load generator behind `stockpulse-load`; talks to a server only over TCP.
//!
//! `docs/ARCHITECTURE.md` is the map.

pub mod alert;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod fuzzing;
pub mod journal;
pub mod ledger;
pub mod load;
pub mod notify;
pub mod server;

mod api;
mod demo;
mod hub;

/// The `/ws` protocol as an AsyncAPI 3.0 document, as `/api/asyncapi.json` serves it.
pub use api::asyncapi;
