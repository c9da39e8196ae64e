//! The Prometheus mixin in deploy/prometheus/: the rules pass `promtool check rules`, and
//! `promtool test rules` runs tests.yml, in which every alert both fires and stays quiet; every
//! alert has summary, description and runbook annotations and a runbook section in README.md;
//! the Grafana dashboard is JSON whose every query is valid PromQL (promtool checks it as a
//! recording rule), names only series a live scrape of the real daemon has (or Prometheus's own
//! `up`), and takes max or min, never sum, of the table-wide series (the same on every replica).

use std::collections::BTreeSet;
use std::fmt::Write as _;

#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

const PROMTOOL_INSTALL: &str = "install it with `apt-get install -y prometheus` (scripts/test.sh does this when it is missing)";

/// `promtool ARGS` in deploy/prometheus/, which must succeed.
fn promtool(args: &[&str]) -> Ran {
    let ran = run(
        Command::new("promtool")
            .args(args)
            .current_dir(repo("deploy/prometheus")),
        "",
        PROMTOOL_INSTALL,
    );
    assert_eq!(ran.code, Some(0), "promtool {args:?}: {ran:?}");
    ran
}

/// The alert names of rules.yml.
fn alerts() -> Vec<String> {
    let rules = read("deploy/prometheus/rules.yml");
    let names: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    names
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "rules.yml"]);
    assert!(checked.output().contains("SUCCESS"), "{checked:?}");
    let tested = promtool(&["test", "rules", "tests.yml"]);
    assert!(tested.output().contains("SUCCESS"), "{tested:?}");
}

#[test]
fn every_alert_fires_and_stays_quiet_in_the_tests_and_has_a_runbook() {
    let tests = read("deploy/prometheus/tests.yml");
    let rules = read("deploy/prometheus/rules.yml");
    let readme = read("README.md");
    for alert in alerts() {
        // Each `alertname:` line is followed by its `exp_alerts:` line.
        let mut fires = false;
        let mut quiet = false;
        let lines: Vec<&str> = tests.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == format!("alertname: {alert}") {
                match pair[1] {
                    "exp_alerts: []" => quiet = true,
                    "exp_alerts:" => fires = true,
                    other => panic!("{alert}: unexpected line after alertname: {other}"),
                }
            }
        }
        assert!(
            fires && quiet,
            "{alert}: fires {fires}, quiet {quiet} in tests.yml"
        );
        let block = rules
            .split("- alert: ")
            .find(|b| b.starts_with(&format!("{alert}\n")))
            .unwrap();
        for annotation in ["summary:", "description:", "runbook:"] {
            assert!(block.contains(annotation), "{alert} lacks {annotation}");
        }
        let runbook = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook: README.md#"))
            .unwrap_or_else(|| panic!("{alert}: runbook is not README.md#SECTION"));
        let section = readme
            .split("\n#### ")
            .find(|s| s.lines().next().unwrap().to_lowercase() == runbook)
            .unwrap_or_else(|| panic!("{alert}: README.md has no section #### for #{runbook}"));
        assert!(
            section.contains(&alert),
            "{alert}: not named in README's #{runbook}"
        );
    }
}

/// Every query of the dashboard (`expr` of every target).
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/prometheus/dashboard.json")).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "tokenwarden");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(queries.len() > 10, "{queries:?}");
    queries
}

/// The metric names `query` selects: every identifier right before a `{` (every selector on
/// the dashboard has a job matcher).
fn selected(query: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    for (at, _) in query.match_indices('{') {
        let start = query[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        names.push((start, query[start..at].to_owned()));
    }
    names
}

/// Whether `before` (a query up to a selector) ends with `max by (...) (` or `min by (...) (`.
fn max_or_min_by(before: &str) -> bool {
    let Some(rest) = before.trim_end().strip_suffix('(') else {
        return false;
    };
    let Some(labels) = rest.trim_end().strip_suffix(')') else {
        return false;
    };
    let Some(open) = labels.rfind("by (") else {
        return false;
    };
    let (aggregation, labels) = (labels[..open].trim_end(), &labels[open + 4..]);
    !labels.contains(['(', ')']) && (aggregation.ends_with("max") || aggregation.ends_with("min"))
}

#[tokio::test]
async fn the_dashboard_queries_series_a_live_scrape_has_and_never_sums_table_wide_ones() {
    let queries = dashboard_queries();

    // Valid PromQL: each query as a recording rule, with the dashboard's variables filled in.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let expr = query
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*");
        let _ = writeln!(
            rules,
            "      - record: dashboard:query{i}\n        expr: {}",
            serde_json::to_string(&expr).unwrap()
        );
    }
    fs::write(dir.path().join("dashboard-rules.yml"), rules).unwrap();
    let checked = run(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.path().join("dashboard-rules.yml")),
        "",
        PROMTOOL_INSTALL,
    );
    assert_eq!(checked.code, Some(0), "dashboard PromQL: {checked:?}");

    let (scrape, _) = crate::metrics::live_scrape().await;
    let scraped = crate::metrics::families(&scrape);
    let scopes = crate::metrics::readme_scopes();
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = selected(query);
        assert!(!names.is_empty(), "{query}: no selector");
        assert_eq!(
            query.matches("tokenwarden_").count(),
            names
                .iter()
                .filter(|(_, n)| n.starts_with("tokenwarden_"))
                .count(),
            "{query}: a tokenwarden series without a selector"
        );
        for (start, name) in names {
            if name == "up" {
                continue;
            }
            assert!(
                scraped.contains_key(&name),
                "{query}: {name} is not in a live scrape"
            );
            used.insert(name.clone());
            if scopes[&name] != "process" {
                assert!(
                    max_or_min_by(&query[..start]),
                    "{query}: {name} is table-wide: take max or min by (...) across replicas"
                );
            }
        }
    }
    for wanted in [
        "tokenwarden_credentials",
        "tokenwarden_access_token_soonest_expiry_timestamp_seconds",
        "tokenwarden_refresh_token_soonest_expiry_timestamp_seconds",
        "tokenwarden_refreshes_total",
        "tokenwarden_last_sweep_duration_seconds",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}
