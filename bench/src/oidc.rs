//! The repository's test authorization server (tests/oauth-server, oidc-provider on Node) as a
//! child process on 127.0.0.1: start, mint refresh tokens through its test route, read its counters.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;

pub const CLIENT_ID: &str = "basic-client";
pub const CLIENT_SECRET: &str = "basic-secret";

/// The server; killed and reaped on drop.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pub token_url: String,
    pub base: String,
}

#[derive(Deserialize)]
struct Ready {
    token_url: String,
    port: u16,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Stats {
    pub refresh_ok: u64,
    pub refresh_reuse: u64,
    pub refresh_failed: u64,
    pub grants_revoked: u64,
    pub token_requests: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the server exits when its stdin closes
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `node tests/oauth-server/server.js` with access tokens living `at_ttl` seconds.
pub fn start(repo: &Path, stderr_log: &Path, at_ttl: u64) -> std::io::Result<Server> {
    let dir = repo.join("tests/oauth-server");
    if !dir.join("node_modules").is_dir() {
        return Err(std::io::Error::other(format!(
            "{} has no node_modules: run `npm ci --prefix tests/oauth-server`",
            dir.display()
        )));
    }
    let mut child = Command::new("node")
        .arg(dir.join("server.js"))
        .current_dir(&dir)
        .env("AT_TTL", at_ttl.to_string())
        .env_remove("OAUTH_SERVER_DEBUG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_log)?)
        .spawn()?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut server = Server {
        child,
        stdin,
        token_url: String::new(),
        base: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| std::io::Error::other("the OAuth server printed no ready line within 30 s"))?;
    let ready: Ready = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::other(format!("OAuth server ready line {line:?}: {e}")))?;
    server.token_url = ready.token_url;
    server.base = format!("http://127.0.0.1:{}", ready.port);
    Ok(server)
}

impl Server {
    /// Mints `n` grants for the basic client, `concurrency` requests at a time; their refresh tokens.
    pub async fn mint(&self, n: usize, concurrency: usize) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Minted {
            refresh_token: String,
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}/test/mint", self.base);
        let next = Arc::new(Mutex::new(0..n));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency {
            let (http, url, next) = (http.clone(), url.clone(), Arc::clone(&next));
            tasks.spawn(async move {
                let mut out = Vec::new();
                while next.lock().expect("counter").next().is_some() {
                    let body = serde_json::json!({"client_id": CLIENT_ID, "scope": "openid offline_access api:read"});
                    let response = http.post(&url).json(&body).send().await.map_err(|e| e.to_string())?;
                    if !response.status().is_success() {
                        return Err(format!("mint answered {}", response.status()));
                    }
                    let minted: Minted = serde_json::from_slice(&response.bytes().await.map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                    out.push(minted.refresh_token);
                }
                Ok::<_, String>(out)
            });
        }
        let mut tokens = Vec::with_capacity(n);
        while let Some(joined) = tasks.join_next().await {
            tokens.extend(joined.map_err(|e| e.to_string())??);
        }
        Ok(tokens)
    }

    pub async fn stats(&self) -> Result<Stats, String> {
        let text = reqwest::get(format!("{}/test/stats", self.base))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }
}
