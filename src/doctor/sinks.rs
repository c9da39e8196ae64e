//! `doctor`'s look at the `[[sink]]` files. Imports `config` and `api::users`.

use super::{Check, Verdict};

/// The `[[sink]]` files: each one's directory exists and takes a file from this user, its group
/// exists. (The daemon says the same on its own at start, as one ERROR line per sink.)
#[must_use]
pub fn sink_checks(sinks: &[crate::config::SinkSettings]) -> Vec<Check> {
    sinks
        .iter()
        .map(|sink| {
            let shown = sink.path.display();
            if let Some(group) = &sink.group
                && crate::api::users::group_id(group).is_none()
            {
                return super::failed("sink", format!("{shown}: no group named {group:?}"));
            }
            let dir = sink.path.parent().unwrap_or(std::path::Path::new("/"));
            if !dir.is_dir() {
                return super::failed(
                    "sink",
                    format!("{shown}: the directory {} does not exist", dir.display()),
                );
            }
            let probe = dir.join(format!(".tokenwarden-doctor-{}", std::process::id()));
            match std::fs::File::create(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    super::check(
                        Verdict::Ok,
                        "sink",
                        format!(
                            "{shown}: credential {} (writable by this user)",
                            sink.credential
                        ),
                    )
                }
                Err(e) => super::failed("sink", format!("{shown}: cannot write there: {e}")),
            }
        })
        .collect()
}
