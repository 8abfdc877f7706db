//! The integration tests: one binary (to keep link time down), one module per area. Every
//! test starts the real server on an ephemeral port and talks to it over TCP.

mod access;
mod bad_input;
mod binary;
mod channels;
mod cluster;
mod durability;
mod hostile;
mod load;
mod notify;
mod orders;
mod protocol;
mod push;
mod rooms;
mod show;
mod skus;
mod support;
mod tidy;
