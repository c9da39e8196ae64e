//! Authenticating routes (`[[proxy]]`): a program that knows nothing of OAuth calls a local
//! address, and the request goes to the upstream API with the credential's `Authorization`
//! header added, renewed before it expires and once more when the upstream answers 401.
//! `proxy/forward.rs` (target URL and headers: pure), `proxy/credential.rs` (the header per
//! credential, renewals shared in this process), `proxy/route.rs` (one request), `proxy/tally.rs`
//! (the answer's body counted into the request's log line), `proxy/stats.rs` (per-route series),
//! `proxy/upstream.rs` (the connections toward the upstream, their timeouts), `proxy/workers.rs`
//! (the threads the connections run on). Served through `listener`; a unix peer is decided by the
//! token API's access rules (`api::access`, `api::users`). Imports `api`, `config`, `deliver`,
//! `domain`, `http`, `listener`, `renew`, `store` and `sweep`.

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ProxyListen, ProxySettings, Settings};
use crate::listener::{self, Limits, Socket};
use crate::sweep::Sweeper;

pub mod credential;
pub mod forward;
pub mod route;
pub mod stats;
mod tally;
pub mod upstream;
mod workers;

pub use route::{RETRY_HEADER, Route, RouteParts};
pub use stats::ProxyStats;

/// Why the routes could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Config(#[source] Box<ConfigError>),
    #[error("proxy route {route}: cannot listen on {listen}: {source}")]
    Listen {
        route: String,
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy route {route}: {reason}")]
    Client { route: String, reason: String },
}

impl From<ConfigError> for ProxyError {
    fn from(e: ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

/// A route bound to its socket, ready to serve.
pub struct Bound {
    name: String,
    socket: Socket,
    limits: Limits,
    route: Route,
}

/// Binds every `[[proxy]]` route (all or none: the first that cannot listen is the error).
/// The upstreams are reached through the HTTP proxies `env` names, as the token endpoints are
/// (`http::proxy`: never for loopback).
pub async fn bind(
    sweeper: &Sweeper,
    settings: &Settings,
    env: &std::collections::BTreeMap<String, String>,
    stats: &ProxyStats,
) -> Result<Vec<Bound>, ProxyError> {
    let mut bound = Vec::with_capacity(settings.proxy.len());
    // The system's roots are read and parsed once, for every route (`http::tls_config`).
    let mut tls = None;
    for (i, block) in settings.proxy.iter().enumerate() {
        let key = format!("proxy[{i}]");
        bound.push(bind_one(sweeper, settings, env, block, &key, stats, &mut tls).await?);
    }
    Ok(bound)
}

async fn bind_one(
    sweeper: &Sweeper,
    settings: &Settings,
    env: &std::collections::BTreeMap<String, String>,
    block: &ProxySettings,
    key: &str,
    stats: &ProxyStats,
    tls: &mut Option<rustls::ClientConfig>,
) -> Result<Bound, ProxyError> {
    let name = block.route_name().to_owned();
    let listen_error = |source| ProxyError::Listen {
        route: name.clone(),
        listen: block.listen.clone(),
        source,
    };
    let socket = match block.listen(key)? {
        ProxyListen::Tcp(address) => {
            Socket::Tcp(listener::bind_tcp(address).await.map_err(listen_error)?)
        }
        ProxyListen::Unix(path) => Socket::Unix(listener::bind_unix(&path).map_err(listen_error)?),
    };
    let client_error = |e: crate::http::HttpError| ProxyError::Client {
        route: name.clone(),
        reason: e.to_string(),
    };
    let timeouts = upstream::Timeouts {
        connect: block.connect_timeout,
        idle: block.idle_timeout,
        request: block.request_timeout,
        step: block.header_read_timeout,
    };
    let proxies = crate::http::proxy::from_env(env).map_err(client_error)?;
    let tls = match tls {
        Some(tls) => tls.clone(),
        None => tls
            .insert(crate::http::tls_config().map_err(client_error)?)
            .clone(),
    };
    let client = upstream::Upstream::new(timeouts, proxies, tls).map_err(client_error)?;
    let credentials = credential::Credentials::new(
        sweeper.clone(),
        block.min_valid,
        block
            .request_timeout
            .min(std::time::Duration::from_secs(30)),
    );
    let route = Route::new(RouteParts {
        name: name.clone(),
        which: block.which(key)?,
        upstream: block.upstream(key)?,
        allow_insecure_http: block.allow_insecure_http,
        x_forwarded: block.x_forwarded,
        retry_body_max: block.retry_body_max,
        body_timeout: block.request_timeout,
        client,
        credentials,
        stats: stats.clone(),
        rules: crate::api::access::Rules::new(
            settings.access.clone(),
            settings.api.owners_read_own,
            rustix::process::geteuid().as_raw(),
        ),
    });
    let limits = Limits {
        header_read: block.header_read_timeout,
        connection: block.request_timeout + block.header_read_timeout,
        max_connections: block.max_connections,
        keep_alive: true,
    };
    Ok(Bound {
        name,
        socket,
        limits,
        route,
    })
}

/// Serves every bound route until `shutdown`: each accepts on the daemon's runtime and deals its
/// connections to the worker threads (`proxy/workers.rs`), the one with the fewest first. Returns
/// when all have stopped. Without worker threads (the system refused them) the daemon's runtime
/// serves the connections, with one warning line.
pub async fn serve(routes: Vec<Bound>, shutdown: CancellationToken) {
    if routes.is_empty() {
        // No thread, runtime or task is made for no route.
        return;
    }
    let workers = match workers::Workers::start() {
        Ok(workers) => Some(workers),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the proxy's worker threads; the routes are served by the daemon's runtime");
            None
        }
    };
    let dealer = workers
        .as_ref()
        .map(|w| std::sync::Arc::new(listener::Dealer::new(w.handles().iter().cloned())));
    let mut served = tokio::task::JoinSet::new();
    for bound in routes {
        tracing::info!(route = %bound.name, "proxy route listening");
        // The listener names itself in its warnings with a 'static str: one per route, for the
        // life of the process.
        let name: &'static str = Box::leak(format!("proxy {}", bound.name).into_boxed_str());
        served.spawn(listener::serve_dealt(
            bound.socket,
            bound.limits,
            name,
            bound.route,
            shutdown.clone(),
            dealer.clone(),
        ));
    }
    while served.join_next().await.is_some() {}
    if let Some(workers) = workers {
        // Their threads end at once (nothing is left to serve); joined off the runtime.
        let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    }
}
