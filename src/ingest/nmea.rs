//! NMEA 0183: sentence framing, checksums and epoch assembly into fixes.
