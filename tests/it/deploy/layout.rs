//! DEVELOPERS.md's layout against `src/`: every file under `src/` is named in it, so the map a
//! newcomer reads first cannot fall behind the code unnoticed.

use std::collections::BTreeSet;
use std::path::Path;

/// The layout block of DEVELOPERS.md: the fenced block under `## Layout`, with `{a,b}` lists
/// expanded (`transactions/{refresh,enroll}.rs` names both files).
fn layout() -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("DEVELOPERS.md"))
        .expect("DEVELOPERS.md");
    let after = text.split("## Layout").nth(1).expect("a ## Layout section");
    let block = after.split("```").nth(1).expect("a fenced layout block");
    let mut expanded = String::new();
    for word in block.split_whitespace() {
        expanded.push(' ');
        match (word.find('{'), word.find('}')) {
            (Some(open), Some(close)) if open < close => {
                for part in word[open + 1..close].split(',') {
                    expanded.push_str(&word[..open]);
                    expanded.push_str(part);
                    expanded.push_str(&word[close + 1..]);
                    expanded.push(' ');
                }
            }
            _ => expanded.push_str(word),
        }
    }
    expanded
}

/// Every `.rs` file under `src/`, as a path relative to it (`store/claim.rs`).
fn sources(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("src/") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src/");
            out.insert(relative.to_string_lossy().into_owned());
        }
    }
}

/// Whether `layout` names `file`: by its path under `src/`, or by its path under its top module
/// (`claim.rs` in the `store.rs` entry, `transactions/refresh.rs`), as a word of its own.
fn names(layout: &str, file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    let mut candidates = vec![file.to_owned()];
    if parts.len() > 1 {
        candidates.push(parts[1..].join("/"));
    }
    let path_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "_/".contains(c));
    candidates.iter().any(|candidate| {
        layout.match_indices(candidate.as_str()).any(|(at, _)| {
            !path_char(layout[..at].chars().next_back())
                && !path_char(layout[at + candidate.len()..].chars().next())
        })
    })
}

#[test]
fn developers_md_names_every_file_under_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeSet::new();
    sources(&root, &root, &mut files);
    let layout = layout();
    let missing: Vec<&String> = files.iter().filter(|f| !names(&layout, f)).collect();
    assert!(
        missing.is_empty(),
        "DEVELOPERS.md's layout does not name: {missing:?}"
    );
}
