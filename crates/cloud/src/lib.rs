//! The cloud side of fixgate: what receives the gateways' batches. It links
//! the wire codec ([`fixgate_wire`]) and the shared I/O helpers, never the
//! gateway's daemon (no sled, no device intake).

pub mod land;
pub mod receive;

pub use fixgate_support::{signal, tls};
pub use fixgate_wire as wire;
pub use fixgate_wire::fix;
