//! Credentials of the jwt-bearer grant (RFC 7523 §2.1): no refresh token, and the subject their
//! assertions name. Imported like `add` imports others, in one write transaction of the backend.

use super::records::NewCredential;
use super::{Store, StoreError, on_backend};
use crate::domain::UnixTime;

impl Store {
    /// Imports a jwt-bearer credential for `subject` (the assertion's `sub`; `None`: none sent),
    /// due at once. With `replace`, an existing credential of that name becomes this one, active
    /// again, its old tokens dropped; without, it is an error.
    pub async fn add_jwt_bearer(
        &self,
        c: &NewCredential<'_>,
        subject: Option<&str>,
        replace: bool,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.add_jwt_bearer(c, subject, replace, now).await)
    }
}
