//! A credential's life at the provider, around the sweep's refreshes: `authorize` obtains its
//! first tokens (authorization-code grant with PKCE) and `revoke` ends it (RFC 7009). Both send
//! their requests through the one transport (`http`) and write through `store`. Imports `config`,
//! `domain`, `http`, `provider`, `store` and `refresh`.

pub mod authorize;
mod callback;
pub mod revoke;

pub use authorize::{AuthorizeError, authorize};
pub use revoke::{RetrySummary, RevokeError, Revoked, Revoker, retry_pending_revocations};
