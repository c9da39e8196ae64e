//! Turning sealing on for a database that held refresh tokens in clear: 30 credentials at a
//! provider that never rotates them (Google-like) are refreshed without a key, so that every row
//! update leaves a copy of the same live refresh token in free space and in old `-wal` frames.
//! Then `[encryption]` is added: after `run --once` (which seals and clears the file) and after
//! `rekey`, none of the 30 refresh tokens is anywhere in `tokenwarden.db`, `-wal` or `-shm`.

use std::collections::BTreeSet;

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::Home;
use crate::seal::{assert_not_in_files, encryption, file_bytes, key_file};

const CREDENTIALS: usize = 30;

#[tokio::test]
async fn no_plaintext_refresh_token_is_left_in_any_database_file_after_sealing_is_turned_on() {
    // No refresh_token in the answer: the stored one stays, as with Google.
    let provider = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"at-not-rotating-0123456789","token_type":"Bearer","expires_in":60}"#,
    ))
    .await;
    let home = Home::with_token_url(&provider.token_url(), "");
    let tokens: BTreeSet<String> = (0..CREDENTIALS)
        .map(|i| format!("rt-plaintext-canary-{i:02}-5d1e9a"))
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        home.add(&format!("user-{i:02}"), "basic", token).await;
    }
    // Each sweep rewrites every row (made due first): old versions of the rows, refresh token
    // and all, pile up in free space and in the log.
    for _ in 0..3 {
        let db = home.db().await;
        sqlx::query("UPDATE oauth_credential SET refresh_due_at = 0")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
        let run = home.run(&["run", "--once"], "").await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    assert_eq!(provider.requests(), 3 * CREDENTIALS);

    let (key, _, _) = key_file(home.path(), "encryption.key");
    let config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        config.replacen(
            "[log]",
            &format!("{}\n[log]", encryption(&key, &[], false)),
            1,
        ),
    )
    .unwrap();
    let sealed = home.run(&["run", "--once"], "").await;
    assert_eq!(sealed.code, Some(0), "{sealed:?}");
    assert!(
        sealed.stderr.contains("plaintext tokens sealed")
            && sealed.stderr.contains("-wal file emptied"),
        "{sealed:?}"
    );
    assert_not_in_files(&file_bytes(&home.db, &[]), &tokens);

    let rekey = home.run(&["rekey"], "").await;
    assert_eq!(rekey.code, Some(0), "{rekey:?}");
    assert!(rekey.stdout.contains("-wal file emptied"), "{rekey:?}");
    assert_not_in_files(&file_bytes(&home.db, &[]), &tokens);
}
