//! The Dockerfile and .dockerignore: hadolint, the build context, what the build ships, and the
//! image's environment and health check run against the real binary.

#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

/// One Dockerfile instruction: its keyword (upper case) and the rest, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, inside a continued instruction too.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .expect("KEYWORD args");
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends inside an instruction");
    out
}

/// The Dockerfile's stages: (name or index, the FROM's image, the instructions after it).
fn stages() -> Vec<(String, String, Vec<Instruction>)> {
    let mut stages: Vec<(String, String, Vec<Instruction>)> = Vec::new();
    for instruction in dockerfile() {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                [_] => stages.len().to_string(),
                other => panic!("FROM {other:?}"),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else {
            stages.last_mut().expect("FROM first").2.push(instruction);
        }
    }
    stages
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array {text:?}: {e}"))
}

/// The package's name and rust-version, from Cargo.toml's [package] table.
fn package() -> (String, String) {
    let manifest = read("Cargo.toml");
    assert!(
        !manifest.contains("[[bin]]"),
        "a [[bin]] target may rename the binary: update this test and the Dockerfile"
    );
    let manifest = format!("\n{manifest}");
    let package = manifest
        .split("\n[")
        .find(|t| t.starts_with("package]"))
        .expect("[package]");
    let field = |key: &str| {
        package
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("Cargo.toml: no package.{key}"))
    };
    (field("name"), field("rust-version"))
}

/// "1.95" or "1.95.0" as comparable numbers.
fn version(text: &str) -> Vec<u32> {
    text.split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("version {text:?}")))
        .collect()
}

/// Matches a .dockerignore pattern against a slash-separated path: `*` and `?` stay within one
/// path element, `**` spans any number.
fn glob(pattern: &[u8], path: &[u8]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(b'*'), _) if pattern.get(1) == Some(&b'*') => {
            let rest = pattern[2..].strip_prefix(b"/").unwrap_or(&pattern[2..]);
            (0..=path.len()).any(|i| glob(rest, &path[i..]))
        }
        (Some(b'*'), _) => {
            glob(&pattern[1..], path)
                || (path.first().is_some_and(|&c| c != b'/') && glob(pattern, &path[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob(&pattern[1..], &path[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Whether .dockerignore keeps `path` out of the build context: the last pattern that matches the
/// path or one of its parent directories decides, `!` re-including.
fn dockerignored(path: &str) -> bool {
    let ignore = read(".dockerignore");
    let prefixes: Vec<&str> = path
        .match_indices('/')
        .map(|(i, _)| &path[..i])
        .chain([path])
        .collect();
    let mut ignored = false;
    for line in ignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (include, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        if prefixes
            .iter()
            .any(|p| glob(pattern.as_bytes(), p.as_bytes()))
        {
            ignored = !include;
        }
    }
    ignored
}

#[test]
fn dockerignore_sends_only_the_build_inputs() {
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/store.rs",
        "migrations/sqlite/0001_init.sql",
        "config/tokenwarden.example.toml",
        "deploy/container/healthcheck",
    ] {
        assert!(!dockerignored(kept), "{kept} must reach the builder");
    }
    for left_out in [
        "target/release/tokenwarden",
        ".git/HEAD",
        "tests/oauth-server/node_modules/koa/package.json",
        "node_modules/x/index.js",
        "tokenwarden.db",
        "tokenwarden.db-wal",
        "tokenwarden.toml",
        "Dockerfile",
    ] {
        assert!(
            dockerignored(left_out),
            "{left_out} must stay out of the build context"
        );
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let ran = run(
        Command::new("hadolint")
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(repo("Dockerfile"))
            .current_dir(repo("")),
        "",
        HADOLINT_INSTALL,
    );
    assert_eq!(ran.code, Some(0), "hadolint: {ran:?}");
    assert!(ran.output().trim().is_empty(), "hadolint reported: {ran:?}");
}

#[test]
fn dockerfile_builds_and_ships_the_package_binary() {
    let (name, rust_version) = package();
    let stages = stages();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder, builder_image, build) = &stages[0];
    let (_, runtime_image, runtime) = &stages[1];

    // The toolchain is new enough, and the runtime has the builder's Debian release (its glibc).
    let tag = builder_image.strip_prefix("rust:").expect("FROM rust:…");
    let (toolchain, flavour) = tag.split_once('-').expect("rust:VERSION-FLAVOUR");
    assert!(
        version(toolchain) >= version(&rust_version),
        "{builder_image} is older than rust-version {rust_version}"
    );
    let release = flavour.trim_start_matches("slim-");
    assert_eq!(runtime_image, &format!("debian:{release}-slim"));

    // The build: CI's command, after every input it reads is in place.
    let workdir = build
        .iter()
        .rfind(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("builder WORKDIR");
    let last_build = build
        .iter()
        .rposition(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"))
        .expect("RUN … cargo build --release --locked");
    assert!(
        !build[last_build].args.contains("--target")
            && !build[last_build].args.contains("--profile"),
        "the binary's path below assumes the default target and the release profile"
    );
    // Every COPY before it, as (source in the context, where it lands relative to WORKDIR).
    let copied: Vec<(String, String)> = build[..last_build]
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| copy_targets(&i.args, &workdir))
        .collect();
    for (source, _) in &copied {
        assert!(
            repo(source).exists(),
            "COPY {source}: no such file in the repository"
        );
        assert!(
            !dockerignored(source),
            "COPY {source}: .dockerignore leaves it out"
        );
    }
    // The example configuration: tokenwarden-assets embeds it.
    for input in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "migrations",
        "build.rs",
        "config/tokenwarden.example.toml",
    ] {
        if repo(input).exists() {
            assert!(
                copied.iter().any(|(s, to)| s == input && to == input),
                "the build reads {input}: COPY it to {workdir}/{input} before building ({copied:?})"
            );
        }
    }

    // The runtime gets that binary, and runs it.
    let copy_binary = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with(&format!("--from={builder} ")))
        .expect("COPY --from=builder");
    let words: Vec<&str> = copy_binary.args.split_whitespace().collect();
    assert_eq!(words.len(), 3, "COPY {}", copy_binary.args);
    assert_eq!(words[1], format!("{workdir}/target/release/{name}"));
    let installed = Path::new(words[2]);
    let entrypoint = json_array(
        &runtime
            .iter()
            .find(|i| i.keyword == "ENTRYPOINT")
            .expect("ENTRYPOINT")
            .args,
    );
    let debian_path = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    assert!(
        Path::new(&entrypoint[0]) == installed
            || (installed.file_name() == Some(entrypoint[0].as_ref())
                && debian_path
                    .iter()
                    .any(|d| installed.parent() == Some(Path::new(d)))),
        "ENTRYPOINT {entrypoint:?} does not run {}",
        installed.display()
    );
    let cmd = json_array(
        &runtime
            .iter()
            .find(|i| i.keyword == "CMD")
            .expect("CMD")
            .args,
    );
    let mut argv: Vec<String> = entrypoint[1..].to_vec();
    argv.extend(cmd);
    assert_eq!(
        argv.first().map(String::as_str),
        Some("run"),
        "the image runs the daemon"
    );
    assert_cli_accepts("ENTRYPOINT + CMD", &argv);

    // A fixed non-root user owns the volume that holds the database.
    let user = &runtime
        .iter()
        .rfind(|i| i.keyword == "USER")
        .expect("USER")
        .args;
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    assert!(uid.parse::<u32>().is_ok_and(|u| u >= 1000), "USER {user}");
    let env = dockerfile_env(runtime);
    let database = Path::new(&env["TOKENWARDEN_DATABASE"]);
    let volume = &runtime
        .iter()
        .find(|i| i.keyword == "VOLUME")
        .expect("VOLUME")
        .args;
    assert_eq!(database.parent(), Some(Path::new(volume)));
    assert!(
        runtime.iter().any(|i| i.keyword == "RUN"
            && i.args
                .contains(&format!("install -d -o {uid} -g {gid} -m 0700 {volume}"))),
        "the image creates {volume} for {user}"
    );
}

/// Where the sources of a builder-stage `COPY` land, relative to `workdir`: a directory's contents
/// go into the destination itself, a file into a destination ending in `/` (or given several
/// sources) keeps its name.
fn copy_targets(args: &str, workdir: &str) -> Vec<(String, String)> {
    let words: Vec<&str> = args.split_whitespace().collect();
    assert!(
        words.len() >= 2 && !words[0].starts_with("--"),
        "builder COPY {args}"
    );
    let (sources, dest) = words.split_at(words.len() - 1);
    let dest = dest[0];
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let dest = dest.strip_prefix(workdir).unwrap_or(dest);
    let dest = dest.trim_start_matches('/').trim_start_matches("./");
    let dest = dest.trim_end_matches('/').trim_start_matches('.');
    sources
        .iter()
        .map(|source| {
            let name = source.trim_end_matches('/');
            // A file copied into a directory keeps its own name, not its path.
            let file_name = Path::new(name).file_name().unwrap().to_string_lossy();
            let lands = if repo(name).is_dir() || !into_dir && !dest.is_empty() {
                dest.to_owned()
            } else if dest.is_empty() {
                file_name.into_owned()
            } else {
                format!("{dest}/{file_name}")
            };
            (name.to_owned(), lands)
        })
        .collect()
}

/// The ENV settings of a stage.
fn dockerfile_env(stage: &[Instruction]) -> BTreeMap<String, String> {
    stage
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("ENV KEY=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn docker_environment_and_healthcheck_work_with_the_binary() {
    let stages = stages();
    let runtime = &stages.last().unwrap().2;
    let env = dockerfile_env(runtime);
    assert_eq!(env["TOKENWARDEN_LOG__FORMAT"], "json");

    // The binary reads the image's settings: the database in the volume, JSON logs.
    let image_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ran = run(&mut tokenwarden(&["check-config"], &image_env), "", "");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains(&format!("database {}", env["TOKENWARDEN_DATABASE"])),
        "{ran:?}"
    );

    // The health check, run as Docker would, with the database moved into a scratch directory.
    let healthcheck = &runtime
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("HEALTHCHECK")
        .args;
    let argv = json_array(
        healthcheck
            .split_once("CMD ")
            .expect("HEALTHCHECK … CMD [...]")
            .1,
    );
    let script = image_file_source(runtime, &argv[0]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokenwarden.db");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display());
    let check = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(&script);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter())
            .env("PATH", &path)
            .env("TOKENWARDEN_DATABASE", &db)
            .envs(extra.iter().copied())
            .current_dir(dir.path());
        run(&mut cmd, "", "")
    };
    // Docker reserves exit 2; every failure must be 1.
    let ran = check(&[]);
    assert_eq!(ran.code, Some(1), "no database yet: unhealthy: {ran:?}");
    let ran = run(
        &mut tokenwarden(
            &["run", "--once"],
            &[("TOKENWARDEN_DATABASE", db.to_str().unwrap())],
        ),
        "",
        "",
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let ran = check(&[]);
    assert_eq!(ran.code, Some(0), "database in place: healthy: {ran:?}");
    assert!(
        ran.stdout.is_empty(),
        "the status output stays out of `docker inspect`: {ran:?}"
    );
    let ran = check(&[("TOKENWARDEN_SCHEDULE", "not a schedule")]);
    assert_eq!(
        ran.code,
        Some(1),
        "configuration error: unhealthy, not exit 2: {ran:?}"
    );
    fs::write(&db, "not a database").unwrap();
    let ran = check(&[]);
    assert_eq!(ran.code, Some(1), "corrupt database: unhealthy: {ran:?}");
    fs::remove_file(&db).unwrap();

    // With the metrics listener on, the check asks the daemon's /healthz.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("0.0.0.0:{port}");
    let metrics = [
        ("TOKENWARDEN_METRICS__ENABLED", "true"),
        ("TOKENWARDEN_METRICS__LISTEN", listen.as_str()),
    ];
    let ran = check(&metrics);
    assert_eq!(ran.code, Some(1), "no daemon: unhealthy: {ran:?}");
    assert!(
        ran.stdout.contains("nothing listens on 127.0.0.1:"),
        "{ran:?}"
    );
    let mut daemon = tokenwarden(
        &["run"],
        &[
            ("TOKENWARDEN_DATABASE", db.to_str().unwrap()),
            // A sweep every second: stale after two.
            ("TOKENWARDEN_SCHEDULE", "* * * * * *"),
            metrics[0],
            metrics[1],
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let healthy = loop {
        let ran = check(&metrics);
        if ran.code == Some(0) || started.elapsed() > DEADLINE {
            break ran;
        }
        thread::sleep(Duration::from_millis(100));
    };
    // Sweeps that fail (the database replaced by a directory): after twice the schedule's gap
    // (1 s here) /healthz says 503 and why, and so does the check.
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", db.display()));
    }
    fs::create_dir(&db).unwrap();
    let started = Instant::now();
    let unhealthy = loop {
        let ran = check(&metrics);
        if ran.code != Some(0) || started.elapsed() > DEADLINE {
            break ran;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(
        healthy.code,
        Some(0),
        "daemon sweeping: healthy: {healthy:?}"
    );
    assert!(healthy.output().is_empty(), "{healthy:?}");
    assert_eq!(
        unhealthy.code,
        Some(1),
        "database gone: unhealthy: {unhealthy:?}"
    );
    assert!(
        unhealthy.stdout.starts_with(
            "tokenwarden healthcheck: /healthz answered HTTP/1.0 503 Service Unavailable: "
        ),
        "{unhealthy:?}"
    );
}

/// The repository file a runtime-stage `COPY SOURCE DEST` puts at `dest` in the image.
fn image_file_source(runtime: &[Instruction], dest: &str) -> PathBuf {
    let copy = runtime
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.starts_with("--"))
        .find(|i| i.args.split_whitespace().nth(1) == Some(dest))
        .unwrap_or_else(|| panic!("no COPY puts {dest} into the image"));
    let source = copy.args.split_whitespace().next().unwrap();
    assert!(
        !dockerignored(source),
        "COPY {source}: .dockerignore leaves it out"
    );
    repo(source)
}

#[test]
fn the_image_has_the_debian_packages_files() {
    let stages = stages();
    let runtime = &stages.last().unwrap().2;
    let copies: Vec<(String, String)> = runtime
        .iter()
        .filter(|i| i.keyword == "COPY" && i.args.starts_with("--from="))
        .map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            (words[1].to_owned(), words[2].to_owned())
        })
        .collect();
    let cargo = read("Cargo.toml");
    // (what tokenwarden-assets wrote, where the package puts it)
    for (asset, dest) in [
        ("man/*.1.gz", "usr/share/man/man1/"),
        ("man/*.5.gz", "usr/share/man/man5/"),
        (
            "completions/tokenwarden.bash",
            "usr/share/bash-completion/completions/tokenwarden",
        ),
        (
            "completions/_tokenwarden",
            "usr/share/zsh/vendor-completions/_tokenwarden",
        ),
        (
            "completions/tokenwarden.fish",
            "usr/share/fish/vendor_completions.d/tokenwarden.fish",
        ),
        ("tokenwarden.toml", "etc/tokenwarden/tokenwarden.toml"),
    ] {
        assert!(
            cargo.contains(&format!("[\"target/assets/{asset}\", \"{dest}\"")),
            "the package installs target/assets/{asset} as {dest}"
        );
        assert!(
            copies.iter().any(
                |(from, to)| from.ends_with(&format!("/target/assets/{asset}"))
                    && to == &format!("/{dest}")
            ),
            "the image lacks /{dest} ({copies:?})"
        );
    }
}
