//! The statements whose text differs between SQLite and PostgreSQL, side by side: a [`Dialect`]
//! holds one backend's, and `sqlite::DIALECT`/`postgres::DIALECT` are the two values of it. Every
//! other statement both dialects accept and is written once, where it is used
//! (`transactions/`): `$n` parameters, `IS [NOT] DISTINCT FROM`, `true`/`false`. What differs:
//! how a claim takes rows (SQLite's write lock already makes a plain `UPDATE … RETURNING`
//! exclusive; PostgreSQL locks with `FOR UPDATE SKIP LOCKED`), how a bound JSON array becomes
//! rows (`json_each` / `jsonb_to_recordset`, see `batch`; SQLite's `jsonb_each` for arrays of
//! objects: it hands each object to `json_extract` as JSONB, not as text to parse again), and row
//! locks before a rewrite.
//! Adding a statement that differs: a field here with its `///`, and both values. Imports
//! nothing of the crate.

/// One backend's text for the statements that differ.
#[derive(Debug)]
pub(in crate::store) struct Dialect {
    /// Claims due credentials: `$1` owner, `$2` lease end, `$3` now, `$4` limit, `$5` sweep
    /// start, `$6` a JSON array of ids to leave alone (held by a live process past its lease). Due and out of backoff as the sweep started: a row that failed during this sweep (its
    /// backoff may end before the sweep does) waits for the next one, so one sweep sends each at
    /// most once. Returns the columns `ClaimRow` reads (both dialects: `claim_returning!`).
    pub claim_due: &'static str,
    /// Claims one active credential: `$1` owner, `$2` lease end, `$3` name, `$4` now, `$5` a JSON
    /// array of ids to leave alone.
    pub claim_by_name: &'static str,
    /// Claims one credential for revocation, whatever its status: `$1` owner, `$2` lease end, `$3`
    /// name, `$4` now. Returns the columns `RevocationClaim` reads (`revocation_returning!`).
    pub claim_for_revocation: &'static str,
    /// Claims pending revocations due again: `$1` owner, `$2` lease end, `$3` now, `$4` limit.
    pub claim_pending_revocations: &'static str,
    /// Marks the pending journal entries of the credentials in the array `$2` (objects with an
    /// `id`, as `batch::Started`) interrupted at `$1`; returns their ids and their credentials',
    /// when each started, whether and when it was sent, and by whom.
    pub journal_interrupt: &'static str,
    /// Opens a journal entry for each of the array `$4` (`batch::Started`): `$1` trigger, `$2`
    /// owner, `$3` now. Returns each entry's id with its credential's.
    pub journal_start: &'static str,
    /// Stores new tokens from the array `$1` (`batch::Tokens`, distinct ids) in every row that
    /// still holds the refresh token it was claimed with, lease or not (a process that stopped past
    /// its lease: nobody else sent that token meanwhile); a row flagged `needs_reauthorization`
    /// meanwhile becomes active again. Returns the ids of the rows written.
    pub store_tokens: &'static str,
    /// Completes the journal entries in the array `$1` (`batch::Completed`).
    pub journal_finish: &'static str,
    /// Marks the pending journal entries whose ids are in the JSON array `$2` sent at `$1`, in id
    /// order where rows are locked; returns the ids marked. One no longer pending was taken over
    /// by another process meanwhile.
    pub mark_sent: &'static str,
    /// Locks the rows of a group of stored refreshes, the JSON array of ids `$1`, in id order,
    /// before the group writes them; `None` where the transaction's write lock already covers
    /// every row.
    pub lock_group: Option<&'static str>,
    /// The rows of a re-sealing batch not yet in the target's form, locked until the commit where
    /// rows can be locked: `$1` after id, `$2` the current key's head, `$3` whether access tokens
    /// are sealed, `$4` the batch size.
    pub reseal_rows: ResealRows,
    /// Run before and after a batch that replaces stored values, if anything needs to be.
    pub reseal_pragmas: Option<(&'static str, &'static str)>,
}

/// The re-sealing batch's read, per target (`rekey::Target`).
#[derive(Debug)]
pub(in crate::store) struct ResealRows {
    pub seal_plaintext: &'static str,
    pub current: &'static str,
    pub plaintext: &'static str,
}

/// The columns a claim returns, as `ClaimRow` reads them.
macro_rules! claim_returning {
    () => {
        " RETURNING id, name, provider, grant_type, scopes, refresh_token, access_token_expires_at, \
          consecutive_failures, COALESCE(last_refreshed_at, created_at) AS last_success_at, \
          refresh_token_expires_at, lease_expires_at, subject"
    };
}

/// The columns a revocation claim returns, as `RevocationClaim` reads them.
macro_rules! revocation_returning {
    () => {
        " RETURNING id, name, provider, status, access_token, refresh_token, access_token_expires_at, \
          consecutive_failures"
    };
}

// Claims due credentials. PostgreSQL skips rows another replica is claiming at this moment
// instead of waiting for them.

const SQLITE_CLAIM_DUE: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
    WHERE id IN (SELECT id FROM oauth_credential \
        WHERE status = 'active' AND refresh_due_at < $5 AND next_attempt_at <= $5 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
          AND id NOT IN (SELECT value FROM json_each($6)) \
        ORDER BY refresh_due_at LIMIT $4)",
    claim_returning!()
);

const POSTGRES_CLAIM_DUE: &str = concat!(
    "WITH due AS (SELECT id AS due_id FROM oauth_credential \
        WHERE status = 'active' AND refresh_due_at < $5 AND next_attempt_at <= $5 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
          AND id NOT IN (SELECT jsonb_array_elements_text($6::jsonb)::bigint) \
        ORDER BY refresh_due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE id = due_id",
    claim_returning!()
);

// Claims one active credential by name.

const SQLITE_CLAIM_BY_NAME: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
    WHERE name = $3 AND status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
      AND id NOT IN (SELECT value FROM json_each($5))",
    claim_returning!()
);

const POSTGRES_CLAIM_BY_NAME: &str = concat!(
    "WITH one AS (SELECT id AS one_id FROM oauth_credential \
        WHERE name = $3 AND status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
          AND id NOT IN (SELECT jsonb_array_elements_text($5::jsonb)::bigint) \
        FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM one WHERE id = one_id",
    claim_returning!()
);

// Claims one credential for revocation, whatever its status.

const SQLITE_CLAIM_FOR_REVOCATION: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
     WHERE name = $3 AND (lease_expires_at IS NULL OR lease_expires_at <= $4)",
    revocation_returning!()
);

const POSTGRES_CLAIM_FOR_REVOCATION: &str = concat!(
    "WITH one AS (SELECT id AS one_id FROM oauth_credential \
        WHERE name = $3 AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
        FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM one WHERE id = one_id",
    revocation_returning!()
);

// Claims pending revocations due again. SQLite: `revoke_pending = 1`, as the partial index says,
// so that SQLite uses it.

const SQLITE_CLAIM_PENDING_REVOCATIONS: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
     WHERE id IN (SELECT id FROM oauth_credential \
        WHERE revoke_pending = 1 AND status = 'disabled' AND next_attempt_at <= $3 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
        ORDER BY next_attempt_at LIMIT $4)",
    revocation_returning!()
);

const POSTGRES_CLAIM_PENDING_REVOCATIONS: &str = concat!(
    "WITH due AS (SELECT id AS due_id FROM oauth_credential \
        WHERE revoke_pending AND status = 'disabled' AND next_attempt_at <= $3 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
        ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE id = due_id",
    revocation_returning!()
);

// Marks pending journal entries interrupted. SQLite: `+outcome` keeps it on the per-credential
// index: after a crash the pending entries can be many.

const SQLITE_JOURNAL_INTERRUPT: &str = "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
     WHERE +outcome = 'pending' \
       AND credential_id IN (SELECT json_extract(value, '$.id') FROM jsonb_each($2)) \
     RETURNING id, credential_id, started_at, sent_at, lease_owner";

const POSTGRES_JOURNAL_INTERRUPT: &str = "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
     WHERE outcome = 'pending' \
       AND credential_id IN (SELECT (e ->> 'id')::bigint FROM jsonb_array_elements($2::jsonb) AS e) \
     RETURNING id, credential_id, started_at, sent_at, lease_owner";

// Opens the claim's journal entries.

const SQLITE_JOURNAL_START: &str = "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, \
        lease_owner, started_at, old_expires_at, old_refresh_fingerprint) \
     SELECT json_extract(value, '$.id'), json_extract(value, '$.name'), json_extract(value, '$.provider'), \
        $1, $2, $3, json_extract(value, '$.expires_at'), json_extract(value, '$.fingerprint') \
     FROM jsonb_each($4) \
     RETURNING id, credential_id";

const POSTGRES_JOURNAL_START: &str = "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, \
        lease_owner, started_at, old_expires_at, old_refresh_fingerprint) \
     SELECT j.id, j.name, j.provider, $1, $2, $3, j.expires_at, j.fingerprint \
     FROM jsonb_to_recordset($4::jsonb) \
        AS j(id bigint, name text, provider text, expires_at bigint, fingerprint text) \
     RETURNING id, credential_id";

// Marks requests sent. PostgreSQL locks the entries in id order first, as every multi-row write
// locks (a claim's journal_interrupt may be updating some of them); a row that stopped being
// pending meanwhile is left out by the lock's re-check and again by the UPDATE's.

const SQLITE_MARK_SENT: &str = "UPDATE token_rotation SET sent_at = $1 \
     WHERE id IN (SELECT value FROM json_each($2)) AND outcome = 'pending' \
     RETURNING id";

const POSTGRES_MARK_SENT: &str = "WITH locked AS (SELECT id FROM token_rotation \
        WHERE id IN (SELECT jsonb_array_elements_text($2::jsonb)::bigint) AND outcome = 'pending' \
        ORDER BY id FOR UPDATE) \
     UPDATE token_rotation SET sent_at = $1 FROM locked \
     WHERE token_rotation.id = locked.id AND token_rotation.outcome = 'pending' \
     RETURNING token_rotation.id";

/// Stores new tokens from the rows `j` the dialect's `$rows` makes of the bound array `$1`:
/// written once, only the row source differs.
macro_rules! store_tokens {
    ($rows:literal) => {
        concat!(
            "UPDATE oauth_credential SET access_token = j.access_token, token_type = j.token_type, \
                status = CASE WHEN oauth_credential.status = 'needs_reauthorization' THEN 'active' \
                    ELSE oauth_credential.status END, \
                access_token_expires_at = j.expires_at, \
                refresh_token = COALESCE(j.refresh_token, oauth_credential.refresh_token), \
                refresh_token_expires_at = CASE WHEN j.rotated THEN j.refresh_expires_at \
                    ELSE COALESCE(j.refresh_expires_at, oauth_credential.refresh_token_expires_at) END, \
                refresh_due_at = j.due_at, consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, \
                instance_url = COALESCE(j.instance_url, oauth_credential.instance_url), \
                last_refreshed_at = j.stored_at, updated_at = j.stored_at, \
                lease_owner = CASE WHEN oauth_credential.lease_owner = j.holder THEN NULL \
                    ELSE oauth_credential.lease_owner END, \
                lease_expires_at = CASE WHEN oauth_credential.lease_owner = j.holder THEN NULL \
                    ELSE oauth_credential.lease_expires_at END \
             FROM ",
            $rows,
            " WHERE oauth_credential.id = j.id AND oauth_credential.refresh_token IS NOT DISTINCT FROM j.stored \
             RETURNING oauth_credential.id"
        )
    };
}

const SQLITE_STORE_TOKENS: &str = store_tokens!(
    "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.stored') AS stored, \
        json_extract(value, '$.access_token') AS access_token, \
        json_extract(value, '$.token_type') AS token_type, \
        json_extract(value, '$.expires_at') AS expires_at, \
        json_extract(value, '$.refresh_token') AS refresh_token, \
        json_extract(value, '$.refresh_expires_at') AS refresh_expires_at, \
        json_extract(value, '$.rotated') AS rotated, json_extract(value, '$.due_at') AS due_at, \
        json_extract(value, '$.stored_at') AS stored_at, json_extract(value, '$.holder') AS holder, \
        json_extract(value, '$.instance_url') AS instance_url \
      FROM jsonb_each($1)) AS j"
);

const POSTGRES_STORE_TOKENS: &str = store_tokens!(
    "jsonb_to_recordset($1::jsonb) AS j(id bigint, stored text, access_token text, token_type text, \
        expires_at bigint, refresh_token text, refresh_expires_at bigint, rotated boolean, due_at bigint, \
        stored_at bigint, holder text, instance_url text)"
);

/// Completes journal entries from the rows `j` the dialect's `$rows` makes of the bound array
/// `$1`: written once, only the row source differs.
macro_rules! journal_finish {
    ($rows:literal) => {
        concat!(
            "UPDATE token_rotation SET finished_at = j.finished_at, duration_ms = j.duration_ms, \
                outcome = j.outcome, http_status = j.http_status, new_expires_at = j.expires_at, \
                refresh_token_rotated = j.rotated, new_refresh_fingerprint = j.refresh_fingerprint, \
                new_access_fingerprint = j.access_fingerprint, expires_in_reported = j.reported \
             FROM ",
            $rows,
            " WHERE token_rotation.id = j.id"
        )
    };
}

const SQLITE_JOURNAL_FINISH: &str = journal_finish!(
    "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.finished_at') AS finished_at, \
        json_extract(value, '$.duration_ms') AS duration_ms, json_extract(value, '$.outcome') AS outcome, \
        json_extract(value, '$.http_status') AS http_status, \
        json_extract(value, '$.expires_at') AS expires_at, json_extract(value, '$.rotated') AS rotated, \
        json_extract(value, '$.refresh_fingerprint') AS refresh_fingerprint, \
        json_extract(value, '$.access_fingerprint') AS access_fingerprint, \
        json_extract(value, '$.reported') AS reported \
      FROM jsonb_each($1)) AS j"
);

const POSTGRES_JOURNAL_FINISH: &str = journal_finish!(
    "jsonb_to_recordset($1::jsonb) AS j(id bigint, finished_at bigint, duration_ms bigint, \
        outcome text, http_status bigint, expires_at bigint, rotated boolean, refresh_fingerprint text, \
        access_fingerprint text, reported boolean)"
);

/// The rows of a re-sealing batch that match `$wanted`, in id order, with the dialect's `$lock`
/// (PostgreSQL locks them until the commit, so no claim can take one between its read and its
/// write; SQLite's write lock already covers them).
macro_rules! reseal_rows {
    ($lock:literal) => {
        ResealRows {
            // Plaintext to seal (access tokens only when `$3`).
            seal_plaintext: reseal_rows!(@rows $lock;
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 4) <> 'tw1:') \
                 OR ($3 AND access_token IS NOT NULL AND substr(access_token, 1, 4) <> 'tw1:')"),
            // Anything not under the current key's head `$2` (access tokens: plaintext unless `$3`).
            current: reseal_rows!(@rows $lock;
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 13) IS DISTINCT FROM $2) \
                 OR (access_token IS NOT NULL AND CASE WHEN $3 THEN substr(access_token, 1, 13) IS DISTINCT FROM $2 \
                     ELSE substr(access_token, 1, 4) = 'tw1:' END)"),
            // Anything sealed.
            plaintext: reseal_rows!(@rows $lock;
                "substr(refresh_token, 1, 4) = 'tw1:' OR substr(access_token, 1, 4) = 'tw1:'"),
        }
    };
    (@rows $lock:literal; $wanted:literal) => {
        concat!(
            "SELECT id, name, refresh_token, access_token, lease_expires_at FROM oauth_credential \
             WHERE id > $1 AND (",
            $wanted,
            ") ORDER BY id LIMIT $4",
            $lock
        )
    };
}

/// SQLite's statements.
pub(in crate::store) static SQLITE: Dialect = Dialect {
    claim_due: SQLITE_CLAIM_DUE,
    claim_by_name: SQLITE_CLAIM_BY_NAME,
    claim_for_revocation: SQLITE_CLAIM_FOR_REVOCATION,
    claim_pending_revocations: SQLITE_CLAIM_PENDING_REVOCATIONS,
    journal_interrupt: SQLITE_JOURNAL_INTERRUPT,
    journal_start: SQLITE_JOURNAL_START,
    store_tokens: SQLITE_STORE_TOKENS,
    journal_finish: SQLITE_JOURNAL_FINISH,
    mark_sent: SQLITE_MARK_SENT,
    // SQLite takes no row locks (the write lock covers the file): nothing to lock first.
    lock_group: None,
    reseal_rows: reseal_rows!(""),
    // Plaintext replaced in a re-sealing batch is zeroed wherever it was, freed overflow pages
    // included; then back to the steady state's FAST.
    reseal_pragmas: Some(("PRAGMA secure_delete = ON", "PRAGMA secure_delete = FAST")),
};

/// PostgreSQL's statements.
pub(in crate::store) static POSTGRES: Dialect = Dialect {
    claim_due: POSTGRES_CLAIM_DUE,
    claim_by_name: POSTGRES_CLAIM_BY_NAME,
    claim_for_revocation: POSTGRES_CLAIM_FOR_REVOCATION,
    claim_pending_revocations: POSTGRES_CLAIM_PENDING_REVOCATIONS,
    journal_interrupt: POSTGRES_JOURNAL_INTERRUPT,
    journal_start: POSTGRES_JOURNAL_START,
    store_tokens: POSTGRES_STORE_TOKENS,
    journal_finish: POSTGRES_JOURNAL_FINISH,
    mark_sent: POSTGRES_MARK_SENT,
    lock_group: Some(
        "SELECT id FROM oauth_credential \
         WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint) ORDER BY id FOR UPDATE",
    ),
    reseal_rows: reseal_rows!(" FOR UPDATE"),
    // PostgreSQL has no free-page residue to zero.
    reseal_pragmas: None,
};
