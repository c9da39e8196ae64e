//! Which keys seal the stored tokens, and re-sealing them: the first start with a key seals the
//! plaintext rows, `tokenwarden rekey` brings every row under the current key, `rekey --decrypt`
//! writes plaintext back. Small transactions; each row is compare-and-swapped against what was read
//! and skipped while another process holds its lease (its refresh would otherwise find its token
//! changed and drop the new one). So any of these runs beside the daemon and may be killed at any
//! point: every row is in its old form or its new one, never neither.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::FromRow;

use super::seal::{self, Column, HEAD_LEN, Place, Sealer};
use super::{Store, StoreError};
use crate::domain::{self, Secret};

/// Rows re-sealed per transaction.
const BATCH: i64 = 100;
/// Rows named in a message about keys; the rest are counted.
const NAMED: usize = 5;
/// Pause before another pass over rows that were leased by another process.
const LEASED_PAUSE: Duration = Duration::from_millis(250);

/// What re-sealing brings the rows to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Plaintext values sealed under the current key; sealed ones left as they are (the first
    /// start with a key).
    SealPlaintext,
    /// Every value as the configuration asks: refresh tokens under the current key, access tokens
    /// too when `seal_access_tokens`, else plaintext (`rekey`).
    Current,
    /// Every value plaintext (`rekey --decrypt`).
    Plaintext,
}

/// How the stored values of one column are kept: per key id, how many; and plaintext, and values
/// that look sealed but are not well-formed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ColumnUsage {
    pub keys: BTreeMap<String, i64>,
    pub plaintext: i64,
    pub malformed: i64,
}

/// Which keys the database needs, per column.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    pub refresh_tokens: ColumnUsage,
    pub access_tokens: ColumnUsage,
}

impl KeyUsage {
    /// Every key id in use, in either column.
    #[must_use]
    pub fn key_ids(&self) -> BTreeSet<&str> {
        self.refresh_tokens
            .keys
            .keys()
            .chain(self.access_tokens.keys.keys())
            .map(String::as_str)
            .collect()
    }

    /// Values sealed under `id`, in both columns.
    #[must_use]
    pub fn sealed_under(&self, id: &str) -> i64 {
        self.refresh_tokens.keys.get(id).copied().unwrap_or(0)
            + self.access_tokens.keys.get(id).copied().unwrap_or(0)
    }
}

/// What one pass (or a whole `rekey`) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Rows written in their new form.
    pub resealed: u64,
    /// Rows left because another process held their lease (refreshing them right now).
    pub leased: u64,
    /// Rows with a value that cannot be opened (altered): left as they are.
    pub unreadable: Vec<String>,
    /// How the SQLite file was cleared of old page contents afterwards, if it was.
    pub scrub: Option<Scrub>,
}

/// What clearing a SQLite file of the old contents of its pages did (`VACUUM`, then
/// `wal_checkpoint(TRUNCATE)`). Never an error of the command: the values are sealed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scrub {
    /// The file rebuilt and the `-wal` file emptied: no old page content is left.
    Done,
    /// The file rebuilt, but another process was reading the database, so the `-wal` file could
    /// not be emptied: its old frames are overwritten as the log is reused, and the next `rekey`
    /// tries again.
    WalInUse,
    /// `VACUUM` or the checkpoint failed (another process held the write lock past the busy
    /// timeout, the disk is full…): the next `rekey` tries again.
    Failed(String),
}

/// A row a re-sealing pass reads, values as stored.
#[derive(FromRow)]
pub(super) struct Row {
    pub(super) id: i64,
    name: String,
    pub(super) refresh_token: Option<Secret>,
    pub(super) access_token: Option<Secret>,
    lease_expires_at: Option<i64>,
}

/// What a re-sealing pass does with one row.
pub(super) enum Reformed {
    /// Leave it as it is (already in the target form, leased elsewhere, or unreadable).
    Keep,
    /// Write these values, if the row still holds what was read.
    Write {
        refresh: Option<Secret>,
        access: Option<Secret>,
    },
}

impl Store {
    /// Checks that every key the stored values are sealed under is in the keyring, by a few index
    /// seeks. One missing (or no keyring with sealed values) is [`StoreError::KeysMissing`], naming
    /// the key and the first rows that need it.
    pub async fn check_keys(&self) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        for column in [Column::RefreshToken, Column::AccessToken] {
            for id in self.key_ids_in(column).await? {
                let listed = self.sealer.keyring().is_some_and(|k| k.knows(&id));
                if !listed && !missing.contains(&id) {
                    missing.push(id);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for id in &missing {
            parts.push(format!("key {id} ({})", self.rows_under(id).await?));
        }
        let remedy = if self.sealer.keyring().is_some() {
            "which the configuration does not list: add it to [encryption] retired_key_files (or key_file), then `tokenwarden rekey` moves the rows off it"
        } else {
            "but the configuration has no [encryption] key: configure it (turning sealing off is `tokenwarden rekey --decrypt`, with the key still configured)"
        };
        Err(StoreError::KeysMissing(format!(
            "the database holds tokens sealed under {}, {remedy}",
            parts.join(", ")
        )))
    }

    /// Before claiming anything: checks the clock against the database server's and the keys, then with a keyring seals the plaintext rows
    /// left (a database from before sealing was turned on). Returns what that sealing did.
    pub async fn prepare(&self) -> Result<Pass, StoreError> {
        self.check_clock().await?;
        self.check_keys().await?;
        let Some(keyring) = self.sealer.keyring() else {
            return Ok(Pass::default());
        };
        let plaintext = self.has_plaintext(Column::RefreshToken).await?
            || (keyring.seals_access_tokens() && self.has_plaintext(Column::AccessToken).await?);
        if !plaintext {
            return Ok(Pass::default());
        }
        let mut pass = self.reseal_pass(Target::SealPlaintext).await?;
        if pass.resealed > 0 {
            // The plaintext just replaced still sits in free space and in the log's old frames.
            pass.scrub = self.scrub().await;
        }
        Ok(pass)
    }

    /// With SQLite, clears what old pages and log frames hold ([`Scrub`]); `None` on PostgreSQL,
    /// whose dead row versions keep old values until the operator's `VACUUM` (see the README).
    pub async fn scrub(&self) -> Option<Scrub> {
        match &self.db {
            super::backend::Db::Sqlite(db) => Some(match db.scrub().await {
                Ok(true) => Scrub::Done,
                Ok(false) => Scrub::WalInUse,
                Err(e) => Scrub::Failed(e.to_string()),
            }),
            super::backend::Db::Postgres(_) => None,
        }
    }

    /// Brings every row to `target`, passing again over rows another process held the lease of,
    /// for at most `wait`.
    pub async fn rekey(&self, target: Target, wait: Duration) -> Result<Pass, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut total = Pass::default();
        loop {
            let pass = self.reseal_pass(target).await?;
            total.resealed += pass.resealed;
            total.unreadable = pass.unreadable;
            total.leased = pass.leased;
            if pass.leased == 0 || tokio::time::Instant::now() + LEASED_PAUSE > deadline {
                // Sealed (or re-sealed) values leave their old forms in free space: with a key,
                // every rekey ends by clearing them, plaintext from before sealing included.
                if target != Target::Plaintext && self.sealer.keyring().is_some() {
                    total.scrub = self.scrub().await;
                }
                return Ok(total);
            }
            tokio::time::sleep(LEASED_PAUSE).await;
        }
    }

    /// How many values each key seals, per column (reads every row's first characters).
    pub async fn key_usage(&self) -> Result<KeyUsage, StoreError> {
        Ok(KeyUsage {
            refresh_tokens: self.column_usage(Column::RefreshToken).await?,
            access_tokens: self.column_usage(Column::AccessToken).await?,
        })
    }

    async fn column_usage(&self, column: Column) -> Result<ColumnUsage, StoreError> {
        let rows = self.db.heads(column).await?;
        let mut usage = ColumnUsage::default();
        for (head, n) in rows {
            match head_key_id(&head) {
                _ if head.is_empty() => usage.plaintext += n,
                Some(id) => *usage.keys.entry(id.to_owned()).or_default() += n,
                None => usage.malformed += n,
            }
        }
        Ok(usage)
    }

    /// The distinct well-formed key ids in `column`: one index seek per id.
    async fn key_ids_in(&self, column: Column) -> Result<Vec<String>, StoreError> {
        let mut after = seal::PREFIX.to_owned();
        let mut ids = Vec::new();
        while let Some(head) = self.db.next_head(column, &after).await? {
            if let Some(id) = head_key_id(&head) {
                ids.push(id.to_owned());
            }
            after = head;
        }
        Ok(ids)
    }

    /// Whether any value in `column` is plaintext: two index seeks.
    async fn has_plaintext(&self, column: Column) -> Result<bool, StoreError> {
        self.db.has_plaintext(column).await
    }

    /// "N credentials: a, b, c, …" sealed (in either column) under key `id`.
    async fn rows_under(&self, id: &str) -> Result<String, StoreError> {
        let head = format!("{}{id}:", seal::PREFIX);
        let names = self.db.names_under(&head).await?;
        let shown: Vec<&str> = names.iter().take(NAMED).map(String::as_str).collect();
        let more = if names.len() > NAMED { ", …" } else { "" };
        let plural = if names.len() == 1 { "" } else { "s" };
        Ok(format!(
            "{} credential{plural}: {}{more}",
            names.len(),
            shown.join(", ")
        ))
    }

    /// One pass over the rows, in id order, each batch in its own transaction.
    async fn reseal_pass(&self, target: Target) -> Result<Pass, StoreError> {
        let current = self
            .sealer
            .keyring()
            .map(|k| format!("{}{}:", seal::PREFIX, k.current_id()));
        if current.is_none() && target != Target::Plaintext {
            return Ok(Pass::default());
        }
        let seal_access = self.sealer.seals(Column::AccessToken);
        let mut pass = Pass::default();
        let mut after = 0_i64;
        loop {
            let now = domain::now();
            let mut reform_row = |row: &Row| {
                if row.lease_expires_at.is_some_and(|until| until > now) {
                    pass.leased += 1;
                    return Reformed::Keep;
                }
                let (refresh, refresh_ok) = reform(&self.sealer, target, row, Column::RefreshToken);
                let (access, access_ok) = reform(&self.sealer, target, row, Column::AccessToken);
                if !(refresh_ok && access_ok) {
                    pass.unreadable.push(row.name.clone());
                }
                if refresh == row.refresh_token && access == row.access_token {
                    return Reformed::Keep;
                }
                pass.resealed += 1;
                Reformed::Write { refresh, access }
            };
            let current = current.as_deref();
            let last = self
                .db
                .reseal_batch(target, after, current, seal_access, BATCH, &mut reform_row)
                .await?;
            let Some(last) = last else {
                return Ok(pass);
            };
            after = last;
        }
    }
}

/// The form `row`'s value in `column` should be stored in for `target`, and whether it could be
/// opened (a value that cannot is kept as it is).
fn reform(sealer: &Sealer, target: Target, row: &Row, column: Column) -> (Option<Secret>, bool) {
    let stored = match column {
        Column::RefreshToken => &row.refresh_token,
        Column::AccessToken => &row.access_token,
    };
    let Some(stored) = stored else {
        return (None, true);
    };
    let place = Place {
        id: row.id,
        name: &row.name,
        column,
    };
    let was_sealed = seal::is_sealed(stored.expose());
    let current = sealer.keyring().map(super::seal::Keyring::current_id);
    let keep = match target {
        Target::SealPlaintext => was_sealed || !sealer.seals(column),
        Target::Current if sealer.seals(column) => {
            seal::key_id_of(stored.expose()).is_some_and(|id| Some(id) == current)
        }
        Target::Current | Target::Plaintext => !was_sealed,
    };
    if keep {
        return (Some(stored.clone()), true);
    }
    match sealer.open(place, stored) {
        Ok(plain) if target == Target::Plaintext => (Some(plain), true),
        Ok(plain) => (Some(sealer.to_stored(place, &plain)), true),
        Err(_) => (Some(stored.clone()), false),
    }
}

/// The key id in the first characters of a stored value, if they are a well-formed head.
fn head_key_id(head: &str) -> Option<&str> {
    if head.len() != HEAD_LEN || !head.ends_with(':') {
        return None;
    }
    let id = head.strip_prefix(seal::PREFIX)?.strip_suffix(':')?;
    seal::is_key_id(id).then_some(id)
}
