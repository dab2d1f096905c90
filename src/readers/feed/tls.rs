//! HTTPS on the feed's port: the server's certificate and key, loaded at
//! start and again on SIGHUP. A new pair that does not load (unreadable, not
//! PEM, a key that is not the certificate's) is refused with a log line and
//! the pair in force stays; connections already open keep theirs.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerCert;
use crate::tls::TlsError;

/// The server's TLS settings in force.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerCert,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the pair; fails when it does not load.
    pub fn load(files: &ServerCert) -> Result<Arc<Self>, TlsError> {
        let config = crate::tls::server_config(&files.cert, &files.key)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(config),
        }))
    }

    /// An acceptor with the pair in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Reads the files again; on success new connections use the new pair,
    /// on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = crate::tls::server_config(&self.files.cert, &self.files.key)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// The files, for log lines.
    pub fn files(&self) -> &ServerCert {
        &self.files
    }
}
