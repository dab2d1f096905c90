-- fixgate's landing schema, version 1 (issue 20). Applied once, in one
-- transaction, under the receivers' migration lock (see migrate.rs).

CREATE EXTENSION IF NOT EXISTS postgis;

-- Positions, partitioned by month: `fix_yYYYYmMM` partitions are created by
-- the receiver on demand, inside the transaction that lands the batch.
CREATE TABLE fixgate.fix (
    gateway     text             NOT NULL,
    seq         bigint           NOT NULL,
    device      text             NOT NULL,
    time        timestamptz      NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    alt         double precision,
    speed       double precision,
    course      double precision,
    hdop        double precision,
    sats        integer,
    mode        text,
    accuracy    double precision,
    historic    boolean          NOT NULL DEFAULT false,
    batch       bigint,
    received_at timestamptz      NOT NULL DEFAULT now(),
    geom        geometry(Point, 4326)
                GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED,
    PRIMARY KEY (gateway, seq, time)
) PARTITION BY RANGE (time);

CREATE INDEX fix_device_time ON fixgate.fix (gateway, device, time);

-- Status changes and geofence events; `data` is the record's JSON line.
CREATE TABLE fixgate.event (
    gateway     text             NOT NULL,
    seq         bigint           NOT NULL,
    device      text             NOT NULL,
    time        timestamptz      NOT NULL,
    kind        text             NOT NULL CHECK (kind IN ('status', 'geofence')),
    data        jsonb            NOT NULL,
    lat         double precision,
    lon         double precision,
    geom        geometry(Point, 4326)
                GENERATED ALWAYS AS (
                    CASE WHEN lat IS NULL OR lon IS NULL THEN NULL
                         ELSE ST_SetSRID(ST_MakePoint(lon, lat), 4326) END
                ) STORED,
    batch       bigint,
    received_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, seq)
);

CREATE INDEX event_device_time ON fixgate.event (gateway, device, time);

-- Which sequence numbers each gateway's batches have accounted for (the
-- rules of receive/dedupe.rs): what lies between them is a gap.
CREATE TABLE fixgate.coverage (
    gateway text           PRIMARY KEY,
    seqs    int8multirange NOT NULL
);

-- Each device's newest live position.
CREATE TABLE fixgate.latest (
    gateway text             NOT NULL,
    device  text             NOT NULL,
    seq     bigint           NOT NULL,
    time    timestamptz      NOT NULL,
    lat     double precision NOT NULL,
    lon     double precision NOT NULL,
    alt     double precision,
    speed   double precision,
    course  double precision,
    geom    geometry(Point, 4326)
            GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED,
    PRIMARY KEY (gateway, device)
);

CREATE VIEW fixgate.latest_position AS
    SELECT gateway, device, seq, time, lat, lon, speed, course, geom
    FROM fixgate.latest;

-- Holes inside each gateway's coverage, between its lowest and highest
-- covered number.
CREATE VIEW fixgate.gaps AS
    SELECT c.gateway, lower(h.r) AS first_seq, upper(h.r) - 1 AS last_seq
    FROM fixgate.coverage AS c,
         LATERAL unnest(
             int8multirange(int8range(lower(c.seqs), upper(c.seqs))) - c.seqs
         ) AS h(r)
    WHERE NOT isempty(c.seqs);

-- A device's fixes between two times as one line, in time order.
CREATE FUNCTION fixgate.track(
    gateway text, device text, from_time timestamptz, to_time timestamptz
) RETURNS geometry(LineString, 4326)
LANGUAGE sql STABLE AS $$
    SELECT ST_SetSRID(ST_MakeLine(f.geom ORDER BY f.time, f.seq), 4326)
    FROM fixgate.fix AS f
    WHERE f.gateway = $1 AND f.device = $2 AND f.time >= $3 AND f.time <= $4
$$;
