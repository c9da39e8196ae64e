//! The threads the routes' connections run on: one current-thread runtime per core (at most
//! [`WORKERS_MAX`]); each connection is dealt to one (`listener::Dealer`). A client connection,
//! its upstream connection and its answers stay on that thread, as in nginx's worker processes:
//! a request wakes no other thread. What needs the store or a provider (a credential
//! read or renewed) runs on the daemon's runtime (`credential::Credentials`).

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Most worker threads, whatever the machine (as many as the daemon's own runtime has).
pub const WORKERS_MAX: usize = 4;

/// Running worker threads; stopped when dropped.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// One worker per available core (at most [`WORKERS_MAX`], at least one).
    pub fn start() -> std::io::Result<Self> {
        let count = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(WORKERS_MAX);
        let stop = CancellationToken::new();
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            stop: stop.clone(),
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tokenwarden-proxy-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Each worker's runtime.
    #[must_use]
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
