//! `migrate --to postgres://…`: the step from the SQLite quick start to PostgreSQL.

use tracing::warn;

use super::exit::{self, Failure};
use crate::domain;
use crate::startup::Ctx;
use crate::store::{Location, OpenMode, OpenOptions, PgOptions, Sealer, Store, TransferError};

pub(super) async fn migrate(ctx: &Ctx, to: &str) -> Result<u8, Failure> {
    let Location::Sqlite(source) = &ctx.location else {
        return Err(TransferError::SourceNotSqlite(ctx.location.shown()).into());
    };
    if !PgOptions::is_url(to) || url::Url::parse(to).is_err() {
        return Err(TransferError::NotPostgresUrl.into());
    }
    let (pg, warnings) = crate::store::postgres_options(&ctx.settings, &ctx.env, to)?;
    for warning in warnings {
        warn!("{warning}");
    }
    let options = OpenOptions {
        mode: OpenMode::CreateIfMissing,
        busy_timeout: ctx.settings.busy_timeout,
        connections: 2,
    };
    // Tokens are copied as stored: no key is needed to copy them, none is used.
    let dest = Store::open(
        &Location::Postgres(pg.clone()),
        &options,
        Sealer::plaintext(),
    )
    .await?;
    let copied = dest
        .copy_from_sqlite(source, ctx.settings.busy_timeout, domain::now())
        .await;
    dest.close().await;
    let copied = copied?;
    println!(
        "copied {} credential(s) and {} journal row(s) from {} to {}; every row compared equal",
        copied.credentials,
        copied.rotations,
        source.display(),
        pg.shown()
    );
    Ok(exit::OK)
}
