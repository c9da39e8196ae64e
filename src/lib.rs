//! tokenwarden keeps stored OAuth 2.0 credentials alive: a scheduled sweep refreshes every access
//! token shortly before it expires, stores the new tokens and journals each rotation.
//!
//! Data flows one way; a module imports only those before it:
//!
//! ```text
//! config ─► keys ─► store ─► sweep ─► refresh | revoke ─► (outcome) ─► sweep::settle ─► store
//!   │        (sqlite | postgres)▲          │
//!   └─► provider ─► http ───────┴──────────┘   (the store seals every token it writes and opens
//!        (discovery)                              every one it reads, above the SQL)
//!
//! startup: settings ─► transport, providers, store, sweeper      cli: parse, dispatch, render
//! daemon:  schedule + signals + metrics listener around sweep     renew, exec: tokens on demand
//! enroll: lifecycle (authorize / device grant) ─► store         doctor: checks ─► Report
//! enroll pages: listener ─► link ─► consent ─► lifecycle::browser ─► store (link spent)
//! ```
//!
//! - [`exit`] — the exit codes, and `ExitStatus`: each error a command ends with says its code
//! - [`domain`] — credentials, tokens, statuses, due-time and backoff arithmetic (pure)
//! - [`holder`] — this process as a lease holder, and whether a holder on this host still runs
//! - [`untrusted`] — the rules text from outside must pass before it is stored or shown (pure)
//! - [`schedule`] — cron expressions and the gap between sweeps
//! - [`config`] — settings from defaults, file and environment, provider presets, validated
//! - [`http`] — the one transport to providers: no redirects, timeouts, body cap, oauth2 adapter
//! - [`discovery`] — endpoints from an issuer's metadata
//! - [`core_dumps`] — this process made non-dumpable at start (no core file, no ptrace)
//! - [`secret_file`] — reading a secret file, refused when anyone may write it (like ssh's keys)
//! - [`provider`] — configured OAuth clients with their endpoints, secrets and client auth
//! - [`keys`] — the `[encryption]` keys
//! - [`store`] — the only module that speaks SQL: one interface, SQLite and PostgreSQL behind it;
//!   where the database is (its location and password); copies a SQLite database into PostgreSQL
//!   (`migrate --to`)
//! - [`refresh`] — one token request (refresh, client credentials, jwt-bearer) and its outcome
//! - [`revoke`] — one revocation request (RFC 7009) and its outcome
//! - [`alerts`] — the operator's command on credential events
//! - [`sweep`] — claim, refresh (within each provider's concurrency and rate limits), settle
//!   (pure), store, log, alert; pending revocations
//! - [`renew`] — a token valid for at least a given time, renewed now through the sweep's path
//! - [`deliver`] — the consumer seam: which credential, fresh enough or renewed under the lease,
//!   the header; `token`, `exec`, the token API and the sinks call it
//! - [`lifecycle`] — `authorize`: the authorization-code grant with PKCE, and the device grant;
//!   never the store
//! - [`enroll`] — runs those grants and stores what they obtained; invitation links and the
//!   pages an owner authorizes through (link -> consent -> provider -> callback -> stored)
//! - [`listener`] — the one way to serve a socket: timeouts, a connection cap, accept backoff,
//!   a rate-limited warning; every listener uses it
//! - [`proxy`] — `[[proxy]]` routes: requests forwarded upstream with the credential's header,
//!   renewed before expiry and once after a 401
//! - [`metrics`] — the optional /metrics and /healthz listener: table-wide aggregates, and
//!   per-credential series up to `metrics.per_credential_max`
//! - [`api`] — the local token API on a unix socket: access rules from the peer's credentials,
//!   then `deliver`; its client for `token --socket`
//! - [`sink`] — files kept holding a credential's current token (`[[sink]]`)
//! - [`daemon`] — the schedule, signals, the metrics listener, the token API, sinks and the
//!   invitation pages around sweeps
//! - [`telemetry`] — logging, with text from outside escaped
//! - [`exec`] — `tokenwarden exec`: a command run with a token in its environment
//! - [`doctor`] — the preflight checks behind `tokenwarden doctor`, as a report
//! - [`startup`] — the wiring from settings to transport, providers, store and sweeper
//! - [`cli`] — the command line: parsing, dispatch, rendering

pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
pub mod core_dumps;
pub mod daemon;
pub mod deliver;
pub mod discovery;
pub mod doctor;
pub mod domain;
pub mod enroll;
pub mod exec;
pub mod exit;
pub mod holder;
pub mod http;
pub mod keys;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod refresh;
pub mod renew;
pub mod revoke;
pub mod schedule;
pub mod secret_file;
pub mod sink;
pub mod startup;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod untrusted;
