//! The exporter against its documentation: README.md's table of series (name, type, labels)
//! compared with a real scrape of the daemon, both ways; the series the alerts need (refresh
//! tokens expiring within the warning window, their soonest expiry, renewals in flight, failed
//! attempts by provider and class, the schedule's gap) hold what they say. `live_scrape` is the
//! scrape the dashboard test (deploy/prometheus.rs) reads too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, stop};
use crate::oauth_server::{OauthServer, clients};
use crate::service::scrape_until;

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// One series family as documented or scraped: its type and label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub kind: String,
    pub labels: BTreeSet<String>,
}

/// README.md's metrics table: sample name (counters with `_total`) -> type and labels.
pub fn readme_table() -> BTreeMap<String, Family> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut table = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `tokenwarden_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", metric, type, labels, scope, meaning, ""
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let family = Family {
            kind: cells[2].to_owned(),
            labels,
        };
        assert!(
            table.insert(name.clone(), family).is_none(),
            "{name} twice in README's table"
        );
    }
    assert!(table.len() > 10, "README's metrics table not found");
    table
}

/// README.md's metrics table: sample name -> scope (`table`, `credential` or `process`).
pub fn readme_scopes() -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("| `tokenwarden_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[4].to_owned())
        })
        .collect()
}

/// A scrape's families: sample name (counters with `_total`, as PromQL sees them) -> type and the
/// label names its samples carry.
pub fn families(scrape: &str) -> BTreeMap<String, Family> {
    let mut kinds = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            kinds.insert(sample, kind.to_owned());
        }
    }
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut labels = BTreeSet::new();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').unwrap();
            for pair in line[name_end + 1..close].split("\",") {
                let (label, _) = pair.split_once('=').unwrap();
                labels.insert(label.trim_start_matches(',').to_owned());
            }
        }
        let kind = kinds
            .get(name)
            .unwrap_or_else(|| panic!("sample {name} without a TYPE line"));
        let family = out.entry(name.to_owned()).or_insert_with(|| Family {
            kind: kind.clone(),
            labels: labels.clone(),
        });
        assert_eq!(
            family.labels, labels,
            "{name}: label names differ between samples"
        );
    }
    out
}

/// The value of the sample `series` (name with its labels, as printed) in `scrape`.
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// A scrape of the real daemon after its first sweep, with every series present: one credential
/// per provider `basic` (refreshed against the test OAuth server; its refresh tokens live 7 days,
/// inside the 14-day warning window) and `post` (held under another process's lease: a renewal in
/// flight). Returns the text and the database's stored secrets (none may be in it).
pub async fn live_scrape() -> (String, Vec<String>) {
    let server = OauthServer::start().await;
    let port = free_port();
    let home = Home::new(
        &server,
        &format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""),
    );
    home.append_to_provider("basic", "refresh_token_lifetime = \"7d\"");
    for (name, provider, client) in [
        ("sharepoint", "basic", clients::BASIC_ID),
        ("held", "post", clients::POST_ID),
    ] {
        let rt = server
            .mint_refresh_token(client, "openid offline_access api:read")
            .await;
        home.add(name, provider, &rt).await;
    }
    let db = home.db().await;
    let far = unix_now() + 3600;
    sqlx::query(
        "UPDATE oauth_credential SET lease_owner = 'another-process', \
         lease_expires_at = ? WHERE name = 'held'",
    )
    .bind(far)
    .execute(&db)
    .await
    .unwrap();
    let daemon = home.command(&["run"]).spawn().unwrap();
    let scrape = scrape_until(port, |t| {
        t.contains("tokenwarden_sweeps_total 1")
            && t.contains("tokenwarden_refresh_token_soonest_expiry_timestamp_seconds{")
    })
    .await;
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    let secrets = crate::backends::stored_secrets(&db).await;
    (scrape, secrets)
}

#[tokio::test]
async fn the_readme_table_matches_a_live_scrape() {
    let (scrape, secrets) = live_scrape().await;
    crate::harness::assert_no_secrets("metrics", &scrape, &secrets);
    let scraped = families(&scrape);
    let documented = readme_table();
    let scraped_names: BTreeSet<_> = scraped.keys().collect();
    let documented_names: BTreeSet<_> = documented.keys().collect();
    assert_eq!(
        scraped_names
            .difference(&documented_names)
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "exported but not in README's table"
    );
    assert_eq!(
        documented_names
            .difference(&scraped_names)
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "in README's table but not exported"
    );
    for (name, family) in &documented {
        assert_eq!(&scraped[name], family, "{name}: README's type or labels");
    }

    // The series the alerts need hold what they say.
    let basic = r#"{provider="basic"}"#;
    assert_eq!(
        value(
            &scrape,
            &format!("tokenwarden_refresh_tokens_expiring_within_warning{basic}")
        ),
        Some(1.0),
        "a 7-day refresh token is inside the 14-day window"
    );
    let rt_expiry = value(
        &scrape,
        &format!("tokenwarden_refresh_token_soonest_expiry_timestamp_seconds{basic}"),
    )
    .unwrap();
    let week_ahead = f64::from(u32::try_from(unix_now() + 7 * 86_400).unwrap());
    assert!(
        (week_ahead - 120.0..=week_ahead).contains(&rt_expiry),
        "{rt_expiry} is not about 7 days ahead"
    );
    assert_eq!(
        value(
            &scrape,
            r#"tokenwarden_renewals_in_flight{provider="post"}"#
        ),
        Some(1.0),
        "the held credential"
    );
    assert_eq!(
        value(&scrape, &format!("tokenwarden_renewals_in_flight{basic}")),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "tokenwarden_sweep_gap_seconds"),
        Some(180.0),
        "the default schedule, every 3 minutes"
    );
    assert_eq!(
        value(
            &scrape,
            r#"tokenwarden_refresh_errors_total{provider="basic",class="rate_limited"}"#
        ),
        Some(0.0),
        "every configured provider's classes from 0"
    );
}

#[tokio::test]
async fn failed_attempts_are_counted_per_provider_and_class() {
    let fake = FakeEndpoint::start(
        Reply::json(429, r#"{"error":"slow_down"}"#).with_header("Retry-After", "600"),
    )
    .await;
    let port = free_port();
    let home = Home::with_token_url(
        &fake.token_url(),
        &format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""),
    );
    home.add("sharepoint", "basic", "rt-that-never-works").await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let scrape = scrape_until(port, |t| t.contains("tokenwarden_sweeps_total 1")).await;
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        value(
            &scrape,
            r#"tokenwarden_refresh_errors_total{provider="basic",class="rate_limited"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(
            &scrape,
            r#"tokenwarden_refresh_errors_total{provider="post",class="rate_limited"}"#
        ),
        Some(0.0)
    );
    assert!(fake.requests() >= 1);
}
