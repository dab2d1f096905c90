//! Sources: everything that turns outside bytes into fixes for the pipeline.

pub mod nmea;
