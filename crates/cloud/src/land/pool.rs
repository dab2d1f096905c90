//! The connection pool, from a libpq-style connection string: plain TCP or
//! a Unix socket, or TLS (rustls, ring) when a CA file is given or the
//! string says `sslmode=require`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

/// How long opening one connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database is.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq key/value string or URL, as tokio-postgres parses it.
    pub conninfo: String,
    /// Trust this CA (PEM) for TLS to the server.
    pub ca_file: Option<PathBuf>,
    /// Connections in the pool.
    pub pool_size: usize,
}

/// Builds the pool; it connects lazily, on first use.
pub fn pool(options: &PgOptions) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = options
        .conninfo
        .parse()
        .context("the --postgres connection string")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    if options.ca_file.is_some() {
        // A CA given means TLS is wanted: never fall back to plain text
        // (libpq's default, `prefer`, would).
        config.ssl_mode(SslMode::Require);
    }
    let tls = config.get_ssl_mode() == SslMode::Require;
    let manager = if tls {
        let rustls = crate::tls::client_config(options.ca_file.as_deref(), None)
            .context("TLS to PostgreSQL")?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*rustls).clone());
        Manager::from_config(config, connector, manager_config)
    } else {
        Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    };
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT * 2))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .context("the PostgreSQL pool")
}
