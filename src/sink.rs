//! File sinks (`[[sink]]`): a credential's current token kept in a file for programs that read
//! one (Prometheus `credentials_file`, agents, SDKs), as the token, the header line or the API's
//! JSON. The daemon looks at each sink's credential every [`CHECK_EVERY`] (so a rotation by any
//! process shows within seconds), writes a changed token atomically (a temporary file in the same
//! directory, fsync, rename) with the sink's mode and group, and removes the file once the
//! credential has no valid token (needs re-authorization, disabled, expired). A sink it cannot
//! write is one ERROR line, said again only after it worked. Imports `config`, `domain`,
//! `store`, `deliver` (the header) and `api::users` (group names).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{SinkFormat, SinkSettings};
use crate::domain::{self, Secret, Status, iso8601};
use crate::store::{Store, TokenState};

/// How often each sink's credential is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What the file should hold now: `None` when the credential has no valid token.
#[must_use]
pub fn content(state: Option<&TokenState>, format: SinkFormat, now: i64) -> Option<Secret> {
    let state = state?;
    let token = state.access_token.as_ref()?;
    let valid = state.status == Status::Active
        && state.access_token_expires_at.is_some_and(|t| t > now)
        && crate::untrusted::check_token(token.expose()).is_ok();
    if !valid {
        return None;
    }
    Some(match format {
        SinkFormat::Token => Secret::new(format!("{}\n", token.expose())),
        SinkFormat::Header => {
            let line =
                crate::deliver::header::authorization_header(state.token_type.as_deref(), token)
                    .ok()?;
            Secret::new(format!("{}\n", line.expose()))
        }
        SinkFormat::Json => {
            let mut body = serde_json::json!({
                "name": state.name,
                "access_token": token.expose(),
                "token_type": state.token_type.as_deref().unwrap_or("Bearer"),
                "expires_at": state.access_token_expires_at.map(iso8601),
            });
            if let Some(url) = &state.instance_url {
                body["instance_url"] = serde_json::Value::String(url.clone());
            }
            Secret::new(format!("{body}\n"))
        }
    })
}

/// Writes `text` to `path` atomically, with `mode` and (when given) group `gid`.
pub fn write_atomically(
    path: &Path,
    text: &Secret,
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tokenwarden-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(gid) = gid {
            std::os::unix::fs::fchown(&file, None, Some(gid))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.expose().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One sink as the daemon keeps it.
struct Kept {
    settings: SinkSettings,
    gid: Option<u32>,
    /// What was last written (its fingerprint); `None`: no file.
    written: Option<String>,
    /// Whether the last attempt failed (said once, until it works again).
    failing: bool,
}

/// Why a sink cannot be kept at all.
#[derive(Debug, thiserror::Error)]
#[error("sink {}: group {group:?} does not exist", path.display())]
pub struct SinkError {
    pub path: PathBuf,
    pub group: String,
}

/// Keeps every sink current until `shutdown`.
pub fn spawn(
    store: Store,
    sinks: &[SinkSettings],
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, SinkError> {
    if sinks.is_empty() {
        return Ok(None);
    }
    let mut kept = Vec::new();
    for settings in sinks {
        let gid = match &settings.group {
            Some(group) => Some(crate::api::users::group_id(group).ok_or_else(|| SinkError {
                path: settings.path.clone(),
                group: group.clone(),
            })?),
            None => None,
        };
        kept.push(Kept {
            settings: settings.clone(),
            gid,
            // Unknown: the first look writes or removes whatever is there.
            written: Some(String::new()),
            failing: false,
        });
    }
    info!(sinks = kept.len(), "keeping file sinks current");
    Ok(Some(tokio::spawn(async move {
        loop {
            for sink in &mut kept {
                keep(&store, sink).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    })))
}

async fn keep(store: &Store, sink: &mut Kept) {
    let s = &sink.settings;
    let state = match store.token_state(&s.credential).await {
        Ok(state) => state,
        Err(e) => {
            if !sink.failing {
                error!(sink = %s.path.display(), credential = %s.credential, error = %e, "cannot read the sink's credential");
                sink.failing = true;
            }
            return;
        }
    };
    let want = content(state.as_ref(), s.format, domain::now());
    let fingerprint = want.as_ref().map(Secret::fingerprint);
    if fingerprint == sink.written && (fingerprint.is_none() || s.path.exists()) {
        return;
    }
    let result = match &want {
        Some(text) => write_atomically(&s.path, text, s.mode, sink.gid),
        None => match std::fs::remove_file(&s.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    match result {
        Ok(()) => {
            if want.is_some() {
                info!(sink = %s.path.display(), credential = %s.credential, "sink written");
            } else {
                info!(sink = %s.path.display(), credential = %s.credential, "sink removed: the credential has no valid token");
            }
            sink.written = fingerprint;
            sink.failing = false;
        }
        Err(e) => {
            if !sink.failing {
                error!(sink = %s.path.display(), credential = %s.credential, error = %e, "cannot write the sink");
                sink.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, expires_at: i64) -> TokenState {
        TokenState {
            id: 1,
            name: "n".to_owned(),
            provider: "p".to_owned(),
            status: status.parse().unwrap(),
            access_token: Some(Secret::new("at-1")),
            token_type: Some("bearer".to_owned()),
            access_token_expires_at: Some(expires_at),
            instance_url: None,
            lease_expires_at: None,
            last_error: None,
            next_attempt_at: 0,
        }
    }

    #[test]
    fn content_per_format_and_none_without_a_valid_token() {
        let s = state("active", 2000);
        assert_eq!(
            content(Some(&s), SinkFormat::Token, 1000).unwrap().expose(),
            "at-1\n"
        );
        assert_eq!(
            content(Some(&s), SinkFormat::Header, 1000)
                .unwrap()
                .expose(),
            "Authorization: Bearer at-1\n"
        );
        let json = content(Some(&s), SinkFormat::Json, 1000).unwrap();
        assert!(json.expose().contains("\"access_token\":\"at-1\""));
        assert!(
            content(Some(&s), SinkFormat::Token, 2000).is_none(),
            "expired"
        );
        assert!(
            content(
                Some(&state("needs_reauthorization", 2000)),
                SinkFormat::Token,
                1000
            )
            .is_none()
        );
        assert!(content(Some(&state("disabled", 2000)), SinkFormat::Token, 1000).is_none());
        assert!(content(None, SinkFormat::Token, 1000).is_none());
    }

    #[test]
    fn written_atomically_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_atomically(&path, &Secret::new("a\n"), 0o640, None).unwrap();
        write_atomically(&path, &Secret::new("b\n"), 0o640, None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let missing = dir.path().join("no-such-dir/token");
        assert!(write_atomically(&missing, &Secret::new("c"), 0o600, None).is_err());
    }
}
