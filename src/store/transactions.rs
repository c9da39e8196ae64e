// The transactions and reads both backends run, written once and compiled against each driver:
// this file is `include!`d by `sqlite.rs` and `postgres.rs` (never declared as a module). Each of
// them defines `Db` (its pool and `write()`, the one way into a write transaction), `Conn` (its
// connection type) and the statements whose dialects differ (the claims). Every statement here is
// accepted by both: `$n` parameters, `IS [NOT] DISTINCT FROM`, `true`/`false`.
//
// The statements live in `transactions/`, by what they serve: `refresh.rs` (claims, journal, the
// group writer), `enroll.rs` (new credentials, authorized tokens), `revocation.rs`, `reads.rs`
// (status, log, token, consumers) and `upkeep.rs` (leases, resealing, migrations, the pool).
//
// Values arrive and leave in their stored form (sealed text, or plaintext without a key): the
// `Store` above opens and seals them, passing in what a transaction needs done to a row between
// its statements (`open`, `seal`).

use std::collections::{HashMap, HashSet};

use crate::domain::{Interrupted, Outcome, Secret, Trigger, UnixTime};
use crate::store::claim::ClaimRow;
use crate::store::leases::{HeldElsewhere, HeldLease, PastLease};
use crate::store::records::{
    Aggregate, Authorized, AuthorizedAs, CredentialSummary, NewCredential, RevocationClaim, RevocationResult,
    RotationRecord, TokenRow,
};
use crate::store::rekey::{Reformed, Row as RekeyRow};
use crate::store::seal::Column;
use crate::store::writer::{self, GROUP_MAX, StoreJob};
use crate::store::{Failure, StoreError, Stored, batch};

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

/// The same statement for either token column, `c` standing for the column's name: SQL is never
/// assembled at run time.
macro_rules! for_column {
    ($column:expr; $($piece:tt)*) => {
        match $column {
            Column::RefreshToken => concat!($(for_column!(@piece "refresh_token"; $piece)),*),
            Column::AccessToken => concat!($(for_column!(@piece "access_token"; $piece)),*),
        }
    };
    (@piece $name:literal; c) => { $name };
    (@piece $name:literal; $text:literal) => { $text };
}

/// A claim's journal entry, and the interrupted attempt it follows, if any.
pub(in crate::store) type Journaled = (i64, Option<Interrupted>);

/// What a claim by name found: the claimed row and its journal entry, or the credential's status
/// (`None`: no such credential).
pub(in crate::store) type NameClaim = Result<(ClaimRow, Journaled), Option<String>>;

/// Every backend's `Write` holds its transaction in `tx`.
impl Write {
    fn conn(&mut self) -> &mut Conn {
        &mut self.tx
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

include!("transactions/refresh.rs");
include!("transactions/enroll.rs");
include!("transactions/revocation.rs");
include!("transactions/reads.rs");
include!("transactions/upkeep.rs");
include!("transactions/sent.rs");
