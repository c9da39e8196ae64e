//! The claim's journal and the group writer's multi-row statements on a real temporary SQLite
//! database: one group whose rows change under it, and one credential twice in a group.

use std::time::Duration;

use super::{Refreshed, Stored};
use crate::domain::{self, Claimed, GrantType, Outcome, Secret, TokenSet, Trigger};
use crate::store::{Location, NewCredential, OpenMode, OpenOptions, Sealer, Store};

const OWNER: &str = "unit-test-owner";

/// A credential row as the tests look at it: name, refresh token, access token, lease owner and
/// consecutive failures.
type Row = (String, Option<String>, Option<String>, Option<String>, i64);

/// A store on a fresh file in `dir` with a refresh-token credential per name, `rt-NAME` each.
async fn store_with(dir: &tempfile::TempDir, names: &[&str]) -> Store {
    let location = Location::Sqlite(dir.path().join("tokenwarden.db"));
    let options = OpenOptions {
        mode: OpenMode::CreateIfMissing,
        busy_timeout: Duration::from_secs(5),
        connections: 2,
    };
    let store = Store::open(&location, &options, Sealer::plaintext())
        .await
        .unwrap();
    for name in names {
        let token = Secret::new(format!("rt-{name}"));
        let new = NewCredential {
            name,
            provider: "p",
            grant_type: GrantType::RefreshToken,
            scopes: None,
            owner: None,
            refresh_token: Some(&token),
            subject: None,
        };
        store.add(&new, false, domain::now()).await.unwrap();
    }
    store
}

/// Another connection to the same file, as another program would write to it.
async fn raw(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
    let path = dir.path().join("tokenwarden.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

fn tokens(access: &str, refresh: &str) -> TokenSet {
    TokenSet {
        access_token: Secret::new(access),
        token_type: "Bearer".into(),
        expires_at: domain::now() + 3600,
        refresh_token: Some(Secret::new(refresh)),
        refresh_token_expires_at: None,
        scope: None,
        lifetime_reported: true,
        instance_url: None,
    }
}

/// Applies one group of refreshes, `(claim, tokens)` each, in one transaction.
async fn store_group(store: &Store, refreshes: &[(&Claimed, &TokenSet)]) -> Vec<Stored> {
    let now = domain::now();
    let jobs: Vec<_> = refreshes
        .iter()
        .map(|(claimed, tokens)| {
            let r = Refreshed {
                tokens,
                refresh_due_at: now + 1800,
                http_status: Some(200),
                duration_ms: 3,
            };
            store.store_job(claimed, OWNER, now, &r).0
        })
        .collect();
    store.db.store_group(&jobs).await.unwrap()
}

#[tokio::test]
async fn a_group_stores_every_row_but_the_one_that_changed_and_reports_that_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a", "b", "c"]).await;
    let now = domain::now();
    let mut claimed = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    claimed.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<&str> = claimed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(claimed.iter().all(|c| c.interrupted.is_none()));
    let attempts: std::collections::HashSet<i64> = claimed.iter().map(|c| c.attempt_id).collect();
    assert_eq!(attempts.len(), 3, "one journal entry per claim");

    // "b" is authorized again while its refresh is out.
    let raw = raw(&dir).await;
    sqlx::query("UPDATE oauth_credential SET refresh_token = 'rt-b-again' WHERE name = 'b'")
        .execute(&raw)
        .await
        .unwrap();

    let sets: Vec<TokenSet> = claimed
        .iter()
        .map(|c| tokens(&format!("at-{}", c.name), &format!("rt-{}-2", c.name)))
        .collect();
    let refreshes: Vec<(&Claimed, &TokenSet)> = claimed.iter().zip(&sets).collect();
    let stored = store_group(&store, &refreshes).await;
    assert_eq!(stored, [Stored::Yes, Stored::Superseded, Stored::Yes]);

    let rows: Vec<Row> = sqlx::query_as(
        "SELECT name, refresh_token, access_token, lease_owner, consecutive_failures \
         FROM oauth_credential ORDER BY name",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    let row = |name: &str, rt: &str, at: Option<&str>| {
        (
            name.to_owned(),
            Some(rt.to_owned()),
            at.map(str::to_owned),
            None,
            0,
        )
    };
    assert_eq!(
        rows,
        [
            row("a", "rt-a-2", Some("at-a")),
            // Left as the operator wrote it; its claim given back all the same.
            row("b", "rt-b-again", None),
            row("c", "rt-c-2", Some("at-c")),
        ]
    );

    let journal = store.rotations(None, 10).await.unwrap();
    let outcomes: Vec<(&str, Outcome, Option<bool>)> = journal
        .iter()
        .map(|r| {
            (
                r.credential_name.as_str(),
                r.outcome,
                r.refresh_token_rotated,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("a", Outcome::Refreshed, Some(true)),
            ("b", Outcome::Superseded, Some(true)),
            ("c", Outcome::Refreshed, Some(true)),
        ]
    );
    for r in &journal {
        let name = &r.credential_name;
        assert_eq!(r.http_status, Some(200));
        assert_eq!(r.duration_ms, Some(3));
        assert_eq!(r.expires_in_reported, Some(true));
        assert_eq!(
            r.old_refresh_fingerprint,
            Some(Secret::new(format!("rt-{name}")).fingerprint())
        );
        assert_eq!(
            r.new_refresh_fingerprint,
            Some(Secret::new(format!("rt-{name}-2")).fingerprint())
        );
    }
    store.close().await;
}

#[tokio::test]
async fn one_credential_twice_in_a_group_is_written_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a"]).await;
    let now = domain::now();
    let claimed = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    let first = &claimed[0];
    // A second refresh that sent what the first one stores, and one that sent the original
    // token again (its swap must fail: the first one replaced it).
    let mut second = first.clone();
    second.refresh_token = Some(Secret::new("rt-a-2"));
    second.stored_refresh_token = Some(Secret::new("rt-a-2"));
    let stale = first.clone();
    let (t1, t2, t3) = (
        tokens("at-1", "rt-a-2"),
        tokens("at-2", "rt-a-3"),
        tokens("at-3", "rt-a-4"),
    );
    let stored = store_group(&store, &[(first, &t1), (&second, &t2), (&stale, &t3)]).await;
    assert_eq!(stored, [Stored::Yes, Stored::Yes, Stored::Superseded]);
    let (rt, at): (String, String) =
        sqlx::query_as("SELECT refresh_token, access_token FROM oauth_credential")
            .fetch_one(&raw(&dir).await)
            .await
            .unwrap();
    assert_eq!((rt.as_str(), at.as_str()), ("rt-a-3", "at-2"));
    store.close().await;
}

#[tokio::test]
async fn a_claim_after_a_dead_attempt_marks_it_interrupted_and_knows() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a", "b"]).await;
    let now = domain::now();
    // A process claimed "a" and died: its lease has run out, its journal entry is pending.
    let dead = store
        .claim_by_name("a", "dead-owner", now - 200, now - 100, &[])
        .await
        .unwrap();
    assert!(matches!(dead, super::ClaimByName::Claimed(_)));
    let mut claimed = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    claimed.sort_by(|x, y| x.name.cmp(&y.name));
    let seen: Vec<(&str, bool)> = claimed
        .iter()
        .map(|c| (c.name.as_str(), c.interrupted.is_some()))
        .collect();
    assert_eq!(seen, [("a", true), ("b", false)]);
    let journal = store.rotations(None, 10).await.unwrap();
    let outcomes: Vec<(&str, Outcome)> = journal
        .iter()
        .map(|r| (r.credential_name.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("a", Outcome::Interrupted),
            ("a", Outcome::Pending),
            ("b", Outcome::Pending)
        ]
    );
    // Given back unsent: both claims at once, their entries gone, the rows claimable again.
    store.release_all(&claimed, OWNER).await.unwrap();
    assert_eq!(store.rotations(None, 10).await.unwrap().len(), 1);
    let again = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    store.close().await;
}

/// A credential that failed during a sweep is not claimed again by that sweep, even once its
/// backoff has run out: one sweep sends each credential's refresh token at most once. The next
/// sweep takes it.
#[tokio::test]
async fn a_backoff_ending_during_a_sweep_waits_for_the_next_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a", "b"]).await;
    let now = domain::now();
    let sweep_start = now - 10;
    // `a` failed 8 s into the sweep with a 2 s backoff, which ended before `now`; `b` never ran.
    let db = raw(&dir).await;
    sqlx::query(
        "UPDATE oauth_credential SET next_attempt_at = $1, refresh_due_at = $2 WHERE name = 'a'",
    )
    .bind(sweep_start + 4)
    .bind(sweep_start - 60)
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    let claimed = store
        .claim_due(OWNER, now, now + 120, 10, sweep_start, Trigger::Once, &[])
        .await
        .unwrap();
    let names: Vec<&str> = claimed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert!(!store.any_claimable(now, sweep_start, &[]).await.unwrap());
    store.release_all(&claimed, OWNER).await.unwrap();
    let next = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    assert_eq!(next.len(), 2);
    store.close().await;
}

/// A request marked sent whose lease ran out is seen as out past its lease; a process that took
/// the claim over learns the attempt was sent; the late process then cannot mark (nor send)
/// anything; giving the claim back restores the owner's pending entry and lease; the owner's
/// answer is stored after its lease, and a credential flagged meanwhile becomes active again.
#[tokio::test]
async fn sent_marks_fence_a_late_process_and_its_answer_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a", "b"]).await;
    let now = domain::now();
    // The owner claimed both at `now - 200`; its lease ran out at `now - 100`; it sent "a" only.
    let owned = store
        .claim_due(
            "owner",
            now - 200,
            now - 100,
            10,
            now - 199,
            Trigger::Once,
            &[],
        )
        .await
        .unwrap();
    let a = owned.iter().find(|c| c.name == "a").unwrap();
    let b = owned.iter().find(|c| c.name == "b").unwrap();
    assert!(store.mark_sent(a, now - 199).await.unwrap());
    let past = store.sent_past_lease(now).await.unwrap();
    assert_eq!(
        past.iter()
            .map(|p| (p.name.as_str(), p.lease_owner.as_str(), p.sent_at))
            .collect::<Vec<_>>(),
        [("a", "owner", now - 199)]
    );
    // Skipping "a" (its owner lives), another process claims only "b", never sent.
    let skipped = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[a.id])
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].name, "b");
    let after_b = skipped[0].interrupted.clone().unwrap();
    assert!(!after_b.sent, "b's request never went out");
    assert!(
        !store.mark_sent(b, now).await.unwrap(),
        "b was taken over: the owner sends nothing"
    );
    assert!(!store.any_claimable(now, now + 1, &[a.id]).await.unwrap());
    // Claimed without skipping: the taker learns "a" was sent, by whom, and gives it back.
    let taken = store
        .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let after_a = taken[0].interrupted.clone().unwrap();
    assert!(after_a.sent);
    assert_eq!(after_a.holder.as_deref(), Some("owner"));
    assert_eq!(after_a.started_at, now - 200);
    store
        .give_back(&taken[0], OWNER, &after_a, now)
        .await
        .unwrap();
    assert_eq!(
        store.sent_past_lease(now).await.unwrap().len(),
        1,
        "the owner's again"
    );
    // Flagged meanwhile (as by a replica elsewhere), then the owner's answer arrives.
    let flagged = super::Failure::Reauthorize {
        detail: super::FailureDetail {
            outcome: Outcome::NeedsReauthorization,
            last_error: "refresh token already sent",
            http_status: None,
            error_code: None,
            duration_ms: 0,
        },
    };
    assert_eq!(
        store
            .store_failure(&skipped[0], OWNER, now, &flagged)
            .await
            .unwrap(),
        Stored::Yes
    );
    let status = |name: &'static str| {
        let dir = &dir;
        async move {
            let (s,): (String,) =
                sqlx::query_as("SELECT status FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_one(&raw(dir).await)
                    .await
                    .unwrap();
            s
        }
    };
    assert_eq!(status("b").await, "needs_reauthorization");
    let new = tokens("at-a", "rt-a-2");
    let b_new = tokens("at-b", "rt-b-2");
    assert_eq!(
        store_group(&store, &[(a, &new), (b, &b_new)]).await,
        [Stored::Yes, Stored::Yes],
        "each row still holds the refresh token its owner sent"
    );
    assert_eq!(
        status("b").await,
        "active",
        "flagged meanwhile, active again"
    );
    assert!(store.sent_past_lease(now).await.unwrap().is_empty());
    store.close().await;
}

/// A claim that followed a sent attempt and is given back unsent (or ends in a setback before
/// its request) leaves that attempt pending: the next claim still knows the refresh token was
/// presented.
#[tokio::test]
async fn a_claim_given_back_unsent_keeps_the_sent_attempt_it_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["a"]).await;
    let now = domain::now();
    let owned = store
        .claim_due(
            "owner",
            now - 200,
            now - 100,
            10,
            now - 199,
            Trigger::Once,
            &[],
        )
        .await
        .unwrap();
    assert!(store.mark_sent(&owned[0], now - 199).await.unwrap());
    for round in 0..2 {
        let taken = store
            .claim_due(OWNER, now, now + 120, 10, now + 1, Trigger::Once, &[])
            .await
            .unwrap();
        assert_eq!(taken.len(), 1, "round {round}");
        let after = taken[0].interrupted.clone().unwrap();
        assert!(
            after.sent,
            "round {round}: the first presentation is still known"
        );
        assert_eq!(after.started_at, now - 200, "round {round}");
        if round == 0 {
            store.release(&taken[0], OWNER).await.unwrap();
        } else {
            store.keep_interrupted_pending(&taken[0]).await.unwrap();
        }
    }
    store.close().await;
}
