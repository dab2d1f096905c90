//! I/O helpers the fixgate gateway and its cloud side share: TLS
//! configuration from PEM files (rustls with the ring provider) and
//! cancellation on SIGTERM/SIGINT, and the command-line value parsers. Kept apart from the wire codec, which
//! does no I/O, and from the daemon, which the cloud side must not link.

pub mod args;
pub mod signal;
pub mod tls;
