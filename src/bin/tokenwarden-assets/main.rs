//! `tokenwarden-assets DIR`: writes what a package installs beside the binary, generated from the
//! sources so that it cannot drift from them: the man pages from the clap definitions
//! (`DIR/man/tokenwarden.1` and one `tokenwarden-COMMAND.1` per subcommand, clap_mangen), the
//! configuration's page from the commented example (`DIR/man/tokenwarden.toml.5`, `config_page`),
//! the shell completions (`DIR/completions/tokenwarden.bash`, `_tokenwarden` for zsh,
//! `tokenwarden.fish`, clap_complete), and the packaged configuration (`DIR/tokenwarden.toml`:
//! the example with `database` set to the state directory's file, so that the CLI run outside
//! the unit opens the daemon's database). A separate binary, never installed, so that the daemon
//! links neither generator. Exit 0, or 1 with one line naming what could not be written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

mod config_page;

/// The example configuration, documented key by key; the page is made from it.
const EXAMPLE: &str = include_str!("../../../config/tokenwarden.example.toml");

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    // One argument, a directory: an option (`--help`) is not taken for one.
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: tokenwarden-assets DIR (writes DIR/man and DIR/completions)");
        return ExitCode::from(2);
    };
    if dir.to_string_lossy().starts_with('-') {
        eprintln!("usage: tokenwarden-assets DIR (writes DIR/man and DIR/completions)");
        return ExitCode::from(2);
    }
    match write_all(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenwarden-assets: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The example's commented-out `database` line, and what the packaged configuration says instead.
const DATABASE_LINE: (&str, &str) = (
    "# database = \"/var/lib/tokenwarden/tokenwarden.db\"\n",
    "database = \"/var/lib/tokenwarden/tokenwarden.db\"\n",
);

/// The packaged configuration: the example with `database` set.
fn packaged_config() -> Result<String, String> {
    let (commented, set) = DATABASE_LINE;
    if !EXAMPLE.contains(commented) {
        return Err(format!(
            "config/tokenwarden.example.toml has no line {:?} to uncomment",
            commented.trim_end()
        ));
    }
    Ok(EXAMPLE.replacen(commented, set, 1))
}

/// Writes every page and completion under `dir`.
fn write_all(dir: &Path) -> Result<(), String> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let cmd = tokenwarden::cli::Cli::command().version(version);
    clap_mangen::generate_to(cmd.clone(), &man)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", man.display()))?;
    let config = dir.join("tokenwarden.toml");
    std::fs::write(&config, packaged_config()?)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let page = man.join("tokenwarden.toml.5");
    std::fs::write(&page, config_page::render(EXAMPLE, version))
        .map_err(|e| format!("cannot write {}: {e}", page.display()))?;
    for (shell, file) in [
        (Shell::Bash, "tokenwarden.bash"),
        (Shell::Zsh, "_tokenwarden"),
        (Shell::Fish, "tokenwarden.fish"),
    ] {
        let path: PathBuf = completions.join(file);
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "tokenwarden", &mut script);
        std::fs::write(&path, script)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
