//! tokenwarden keeps stored OAuth 2.0 credentials alive: a scheduled sweep refreshes every access
//! token shortly before it expires, stores the new tokens and journals each rotation.
//!
//! Data flows one way; a module imports only those before it:
//!
//! ```text
//! config ─► keys ─► store ─► sweep ─► refresh ─► (outcome) ─► sweep ─► store
//!   │                          ▲      (store seals every token it writes, opens every one it reads)
//!   └─► provider ──────────────┘            daemon: schedule + signals around sweep
//! ```
//!
//! - [`domain`] — credentials, tokens, statuses, due-time and backoff arithmetic (pure)
//! - [`holder`] — this process as a lease holder, and whether a holder on this host still runs
//! - [`http`] — the one transport to providers: no redirects, timeouts, body cap, oauth2 adapter
//! - [`untrusted`] — the rules text from outside must pass before it is stored or shown (pure)
//! - [`schedule`] — cron expressions and the gap between sweeps
//! - [`config`] — settings from defaults, file and environment, validated
//! - [`preset`] — known providers' endpoints and defaults (pure)
//! - [`discovery`] — endpoints from an issuer's metadata
//! - [`secret_file`] — reading a secret file, refused when anyone may write it (like ssh's keys)
//! - [`provider`] — configured OAuth clients with their endpoints and secrets resolved
//! - [`keys`] — the `[encryption]` keys, read from files or the environment
//! - [`store`] — the SQLite or PostgreSQL database, the only module that speaks SQL; seals tokens
//!   at rest; copies a SQLite database into PostgreSQL (`migrate --to`)
//! - [`refresh`] — one token request and its outcome
//! - [`revoke`] — one revocation request (RFC 7009) and its outcome
//! - [`alerts`] — the operator's command on credential events
//! - [`sweep`] — claim, refresh (within each provider's concurrency and rate limits), store, log,
//!   alert
//! - [`renew`] — a token valid for at least a given time, renewed now through the sweep's path
//! - [`lifecycle`] — `authorize` (authorization-code grant with PKCE) and `revoke` (RFC 7009)
//! - [`daemon`] — the schedule and shutdown around sweeps
//! - [`metrics`] — the optional /metrics and /healthz listener: table-wide aggregates, and
//!   per-credential series up to `metrics.per_credential_max`
//! - [`telemetry`] — logging
//! - [`exec`] — `tokenwarden exec`: a command run with a token in its environment
//! - [`doctor`] — the preflight checks behind `tokenwarden doctor`
//! - [`startup`] — the wiring from settings to transport, providers, store and sweeper
//! - [`cli`] — the command line

pub mod alerts;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod doctor;
pub mod domain;
pub mod exec;
pub mod holder;
pub mod http;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod preset;
pub mod provider;
pub mod refresh;
pub mod renew;
pub mod revoke;
pub mod schedule;
pub mod secret_file;
pub mod startup;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod untrusted;
