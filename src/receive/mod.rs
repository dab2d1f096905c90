//! `fixgate receive`: the reference receiver of upstream batches. It prints
//! every record once as a JSON line and reports gaps on stderr.
//!
//! [`dedupe`] is the pure core; [`output`] shapes the lines.

pub mod dedupe;
pub mod output;
