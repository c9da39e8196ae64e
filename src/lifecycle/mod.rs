//! A credential's life at the provider, around the sweep's refreshes: `authorize` obtains its
//! first tokens (authorization-code grant with PKCE, or `device`: the device authorization grant,
//! RFC 8628) and `revoke` ends it (RFC 7009). Both send
//! their requests through `http` and write through `store`. Imports `config`, `domain`,
//! `provider`, `store` and `refresh`.

pub mod authorize;
mod callback;
pub mod device;
pub mod http;
pub mod revoke;

pub use authorize::{AuthorizeError, authorize};
pub use http::Sender;
pub use revoke::{RetrySummary, RevokeError, Revoked, Revoker, retry_pending_revocations};
