//! The landing statements: one per table per batch, each a multi-row insert
//! from arrays (`unnest`), so that a batch of a thousand records costs a
//! handful of round trips.

/// Takes the gateway's coverage row (made empty for a new gateway) for the
/// rest of the transaction: batches of one gateway land one after another,
/// each seeing what the one before committed. `$1` gateway.
pub const LOCK_COVERAGE: &str = "
INSERT INTO fixgate.coverage AS c (gateway, seqs) VALUES ($1::text, '{}'::int8multirange)
ON CONFLICT (gateway) DO UPDATE SET seqs = c.seqs";

/// A record whose number the gateway's coverage already holds is a
/// duplicate whatever it says (a number is never reused, so a record that
/// differs under a covered number is not the gateway's): the inserts and
/// the latest positions take only numbers not yet covered.
///
/// `$1` gateway, `$2..=$14` the columns of [`super::rows::FixRows`], `$15`
/// the batch id. Rows affected = rows new.
pub const INSERT_FIXES: &str = "
INSERT INTO fixgate.fix (gateway, seq, device, time, lat, lon, alt, speed, course,
                         hdop, sats, mode, accuracy, historic, batch)
SELECT $1::text, u.seq, u.device, u.time, u.lat, u.lon, u.alt, u.speed, u.course,
       u.hdop, u.sats, u.mode, u.accuracy, u.historic, $15::int8
FROM unnest($2::int8[], $3::text[], $4::timestamptz[], $5::float8[], $6::float8[],
            $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::int4[],
            $12::text[], $13::float8[], $14::bool[])
     AS u(seq, device, time, lat, lon, alt, speed, course, hdop, sats, mode, accuracy, historic)
WHERE NOT EXISTS (SELECT 1 FROM fixgate.coverage c WHERE c.gateway = $1 AND c.seqs @> u.seq)
ON CONFLICT DO NOTHING";

/// `$1` gateway, `$2..=$8` the columns of [`super::rows::EventRows`], `$9`
/// the batch id.
pub const INSERT_EVENTS: &str = "
INSERT INTO fixgate.event (gateway, seq, device, time, kind, data, lat, lon, batch)
SELECT $1::text, u.seq, u.device, u.time, u.kind, u.data::jsonb, u.lat, u.lon, $9::int8
FROM unnest($2::int8[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
            $7::float8[], $8::float8[])
     AS u(seq, device, time, kind, data, lat, lon)
WHERE NOT EXISTS (SELECT 1 FROM fixgate.coverage c WHERE c.gateway = $1 AND c.seqs @> u.seq)
ON CONFLICT DO NOTHING";

/// `$1` gateway, `$2` starts, `$3` inclusive ends.
pub const ADD_COVERAGE: &str = "
INSERT INTO fixgate.coverage AS c (gateway, seqs)
VALUES ($1::text, int8multirange(VARIADIC ARRAY(
    SELECT int8range(u.first, u.last, '[]')
    FROM unnest($2::int8[], $3::int8[]) AS u(first, last))))
ON CONFLICT (gateway) DO UPDATE SET seqs = c.seqs + EXCLUDED.seqs";

/// `$1` gateway, `$2..=$9` non-historic positions: each device's newest
/// replaces its row only when newer.
pub const UPDATE_LATEST: &str = "
INSERT INTO fixgate.latest AS l (gateway, device, seq, time, lat, lon, alt, speed, course)
SELECT DISTINCT ON (u.device) $1::text, u.device, u.seq, u.time, u.lat, u.lon, u.alt, u.speed, u.course
FROM unnest($2::text[], $3::int8[], $4::timestamptz[], $5::float8[], $6::float8[],
            $7::float8[], $8::float8[], $9::float8[])
     AS u(device, seq, time, lat, lon, alt, speed, course)
WHERE NOT EXISTS (SELECT 1 FROM fixgate.coverage c WHERE c.gateway = $1 AND c.seqs @> u.seq)
ORDER BY u.device, u.time DESC, u.seq DESC
ON CONFLICT (gateway, device) DO UPDATE
SET seq = EXCLUDED.seq, time = EXCLUDED.time, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
    alt = EXCLUDED.alt, speed = EXCLUDED.speed, course = EXCLUDED.course
WHERE EXCLUDED.time > l.time";

/// The transaction lock that serialises the creation of one month's
/// partition between receivers: `pg_advisory_xact_lock(PARTITION_LOCK, YYYYMM)`.
pub const PARTITION_LOCK: i32 = 0x6667_7066; // "fgpf"

/// `$1` the month's key.
pub const LOCK_MONTH: &str = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";

/// `$1` the qualified table name.
pub const TABLE_EXISTS: &str = "SELECT to_regclass($1::text) IS NOT NULL";
