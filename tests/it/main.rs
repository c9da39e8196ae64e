//! Integration tests: one binary, one module per area.

// End-to-end scenarios read best top to bottom, and name the outputs they compare alike.
#![allow(clippy::too_many_lines, clippy::similar_names)]

mod api;
mod backends;
mod browser;
mod cli;
mod consumers;
mod core;
mod crash;
mod deploy;
mod enroll_pages;
mod fake_endpoint;
mod faults;
mod frozen;
mod grants;
mod harness;
mod hostile;
mod invite;
mod lifecycle;
mod listeners;
mod load;
mod metrics;
mod migrate;
mod oauth_server;
mod pg;
mod pg_rekey;
mod pg_tls;
mod postgres;
mod providers;
mod proxy;
mod recovery;
mod seal;
mod service;
mod test_server;
