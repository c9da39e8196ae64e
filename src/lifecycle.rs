//! A credential's first tokens: `authorize` runs the authorization-code grant with PKCE (a loopback
//! listener for the redirect, or a pasted URL), `device` the device authorization grant (RFC 8628),
//! both through the one transport (`http`); `browser` the code grant split across the two
//! requests of an owner's browser (the invitation pages); `enroll` stores what they obtain. Imports `config`,
//! `domain`, `http`, `provider` and `refresh`, never `store`.

pub mod authorize;
pub mod browser;
mod callback;
pub mod device;

pub use authorize::{AuthorizeError, authorize};
