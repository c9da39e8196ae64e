//! Many rows into one statement. The claim's journal entries and the group writer's outcomes
//! travel as one JSON array bound to a single parameter, which each backend's statement unpacks
//! into rows (`json_each`/`jsonb_each` on SQLite, `jsonb_to_recordset` on PostgreSQL): one statement per batch
//! instead of one per row, and every statement is a round trip (on SQLite to the connection's
//! worker thread and back). The statements stay fixed text; only the bound array grows. An array
//! may hold tokens in their stored form, so it is built as a [`Secret`]: never printed.

use serde::Serialize;

use super::StoreError;
use crate::domain::{Secret, UnixTime};

/// A journal entry to open for a claimed credential (the claim's journal, `JOURNAL_START`).
#[derive(Serialize)]
pub(super) struct Started<'a> {
    /// The credential's id.
    pub id: i64,
    pub name: &'a str,
    pub provider: &'a str,
    /// The access token's expiry before this attempt.
    pub expires_at: Option<UnixTime>,
    /// The fingerprint of the refresh token sent, never the token.
    pub fingerprint: Option<String>,
}

/// New tokens for one credential row, written only while it still holds `stored`
/// (`STORE_TOKENS`, a compare-and-swap per row).
#[derive(Serialize)]
pub(super) struct Tokens<'a> {
    /// The credential's id.
    pub id: i64,
    /// The refresh token as stored when claimed, `None` when none was.
    pub stored: Option<&'a str>,
    pub access_token: &'a str,
    pub token_type: &'a str,
    pub expires_at: UnixTime,
    pub refresh_token: Option<&'a str>,
    pub refresh_expires_at: Option<UnixTime>,
    pub rotated: bool,
    pub due_at: UnixTime,
    pub stored_at: UnixTime,
    pub holder: &'a str,
    pub instance_url: Option<&'a str>,
}

/// How one refresh's journal entry ends (`JOURNAL_FINISH`).
#[derive(Serialize)]
pub(super) struct Completed<'a> {
    /// The journal entry's id.
    pub id: i64,
    pub finished_at: UnixTime,
    pub duration_ms: i64,
    pub outcome: &'a str,
    pub http_status: Option<u16>,
    pub expires_at: UnixTime,
    pub rotated: bool,
    pub refresh_fingerprint: Option<String>,
    pub access_fingerprint: String,
    pub reported: bool,
}

/// The rows as one JSON array, to bind as a single parameter.
pub(super) fn to_json<T: Serialize>(rows: &[T]) -> Result<Secret, StoreError> {
    serde_json::to_string(rows)
        .map(Secret::new)
        .map_err(|e| StoreError::Sql(sqlx::Error::Encode(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::{Started, to_json};

    #[test]
    fn rows_become_one_array_and_text_is_escaped() {
        let rows = [
            Started {
                id: 1,
                name: "a \"quoted\" name",
                provider: "p",
                expires_at: None,
                fingerprint: Some("00ff".into()),
            },
            Started {
                id: 2,
                name: "b",
                provider: "p",
                expires_at: Some(7),
                fingerprint: None,
            },
        ];
        let json = to_json(&rows).unwrap();
        assert_eq!(
            json.expose(),
            r#"[{"id":1,"name":"a \"quoted\" name","provider":"p","expires_at":null,"fingerprint":"00ff"},{"id":2,"name":"b","provider":"p","expires_at":7,"fingerprint":null}]"#
        );
        assert_eq!(format!("{json:?}"), "[redacted]");
    }
}
