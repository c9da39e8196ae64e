//! A credential's first tokens: `authorize` runs the authorization-code grant with PKCE (a loopback
//! listener for the redirect, or a pasted URL) through the one transport (`http`) and stores them.
//! Imports `config`, `domain`, `http`, `provider`, `store` and `refresh`.

pub mod authorize;
mod callback;

pub use authorize::{AuthorizeError, authorize};
