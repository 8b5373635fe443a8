//! Helpers of the integration tests, named for what they hold:
//! - `cluster`: a real three-primary cluster of server processes with the module;
//! - `server`: server processes on free ports (redis-server, or valkey-server through
//!   `$CACHE_SERVER`), what a server is, `wait_until`, replicas;
//! - `commands`: one helper per command (the module's and the server's), INFO parsing;
//! - `fixtures`: entries in every state, snapshots of what can be observed of them and their
//!   comparison;
//! - `records`: crafted entry records, DUMP payloads and AOF files.

pub mod cluster;
pub mod commands;
pub mod fixtures;
pub mod records;
pub mod server;
