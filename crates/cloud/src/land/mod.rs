//! Landing batches in PostgreSQL + PostGIS (issue 20): the schema
//! ([`migrate`]), a batch as columns ([`rows`]), the statements ([`sql`]),
//! the one-transaction-per-batch writer ([`lander`]) and the pool ([`pool`]).

pub mod lander;
pub mod migrate;
pub mod pool;
pub mod rows;
pub mod sql;

pub use lander::{LandError, Landed, Lander};
pub use migrate::migrate;
pub use pool::{PgOptions, pool};
pub use rows::{BadInput, Rows, rows};
