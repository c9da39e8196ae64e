//! The transactions and reads both backends run, written once against [`Db`](super::backend::Db)
//! (`backend`): each statement is a [`sql`](super::statement::sql) text with its values bound,
//! run on the connection `Db::write` or `Db::read` gives. Every statement here is accepted by both
//! dialects (`$n` parameters, `IS [NOT] DISTINCT FROM`, `true`/`false`); the ones that differ come
//! from the connection's `dialect()`.
//!
//! By what they serve: `refresh` (claims, journal, the group writer), `enroll` (new credentials,
//! authorized tokens), `revocation`, `reads` (status, log, consumers), `upkeep` (leases,
//! resealing, migrations, the pool), `invites` (one-time links; spent in `store_authorized`,
//! `spend_invite`) and `sent` (requests marked sent, and those out past their lease). Adding a
//! statement: a method on `Db` in the module it serves,
//! with its `///`, and the `Store` method that calls it.
//!
//! Values arrive and leave in their stored form (sealed text, or plaintext without a key): the
//! `Store` above opens and seals them, passing in what a transaction needs done to a row between
//! its statements (`open`, `seal`). Imports `domain` and the store's own modules.

mod enroll;
mod invites;
mod reads;
mod refresh;
mod revocation;
mod sent;
mod upkeep;

pub(in crate::store) use refresh::group_writer;
