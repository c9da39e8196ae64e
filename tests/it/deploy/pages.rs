//! The man pages and shell completions that `tokenwarden-assets` writes (the packaged ones):
//! every subcommand of the real binary has its page and every long option of it is in that page;
//! every configuration key of the example is in `tokenwarden.toml.5`; `man --warnings` renders
//! each page without a warning (as lintian runs it); the completions name every subcommand and
//! the bash one parses.

#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

const ASSETS: &str = env!("CARGO_BIN_EXE_tokenwarden-assets");

const MAN_INSTALL: &str = "install it with `apt-get install -y man-db` (lintian, which \
scripts/test.sh installs, brings it)";

/// The generated assets in a temporary directory.
pub(super) fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(Command::new(ASSETS).arg(dir.path()), "", "");
    assert_eq!(ran.code, Some(0), "tokenwarden-assets: {ran:?}");
    dir
}

/// The subcommands `tokenwarden --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let help = run(&mut tokenwarden(&["--help"], &[]), "", "").stdout;
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(listed.len() > 10, "no command list in {help}");
    listed
}

/// The long options `tokenwarden COMMAND --help` lists (without --help).
fn long_options(command: &str) -> Vec<String> {
    let help = run(&mut tokenwarden(&[command, "--help"], &[]), "", "").stdout;
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|o| !o.is_empty() && o != "help")
        .collect()
}

/// Every key the example configuration shows, commented out or not.
fn example_keys() -> std::collections::BTreeSet<String> {
    read("config/tokenwarden.example.toml")
        .lines()
        .filter_map(|l| {
            let body = l.strip_prefix("# ").unwrap_or(l);
            let (key, _) = body.split_once(" = ")?;
            (!key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn every_subcommand_and_option_has_its_man_page() {
    let dir = generate();
    let man = dir.path().join("man");
    let main = fs::read_to_string(man.join("tokenwarden.1")).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH tokenwarden 1"),
        "{main}"
    );
    for command in subcommands() {
        assert!(
            main.contains(&command.replace('-', "\\-")),
            "tokenwarden.1 lacks {command}"
        );
        let page = man.join(format!("tokenwarden-{command}.1"));
        let text = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for option in long_options(&command) {
            assert!(
                text.contains(&format!("\\-\\-{}", option.replace('-', "\\-"))),
                "{} lacks --{option}",
                page.display()
            );
        }
    }
}

#[test]
fn every_configuration_key_is_in_the_configuration_page() {
    let dir = generate();
    let page = fs::read_to_string(dir.path().join("man/tokenwarden.toml.5")).unwrap();
    let keys = example_keys();
    assert!(keys.len() > 40, "{keys:?}");
    for key in &keys {
        assert!(
            page.contains(&format!("\\fB{key}\\fR = ")),
            "tokenwarden.toml.5 lacks {key}"
        );
    }
    for table in [
        "http",
        "retry",
        "log",
        "metrics",
        "postgres",
        "alerts",
        "encryption",
        "providers.NAME",
        "[proxy]",
    ] {
        assert!(
            page.contains(&format!(".SS \"[{table}]\"")),
            "tokenwarden.toml.5 lacks [{table}]"
        );
    }
}

#[test]
fn man_renders_every_page_without_a_warning() {
    let dir = generate();
    let mut pages: Vec<PathBuf> = fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert_eq!(pages.len(), subcommands().len() + 2, "{pages:?}");
    for page in pages {
        // lintian's own check (groff-message): warnings go to standard error.
        let ran = run(
            Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
                .arg(&page)
                .env("LC_ALL", "C.UTF-8")
                .env("MANWIDTH", "80"),
            "",
            MAN_INSTALL,
        );
        assert_eq!(ran.code, Some(0), "{}: {ran:?}", page.display());
        assert_eq!(ran.stderr, "", "{}", page.display());
    }
}

#[test]
fn completions_name_every_subcommand() {
    let dir = generate();
    let completions = dir.path().join("completions");
    for file in ["tokenwarden.bash", "_tokenwarden", "tokenwarden.fish"] {
        let text = fs::read_to_string(completions.join(file)).unwrap();
        for command in subcommands() {
            assert!(text.contains(&command), "{file} lacks {command}");
        }
    }
    let ran = run(
        Command::new("bash")
            .arg("-n")
            .arg(completions.join("tokenwarden.bash")),
        "",
        "",
    );
    assert_eq!(ran.code, Some(0), "bash -n: {ran:?}");
}
