#!/usr/bin/env python3
"""Cross-check of fixgate's geofence events against shapely.

An independent implementation of the geofence rules of
src/geofence/machine.rs and src/geofence/shape.rs: containment by shapely
on GeoJSON's planar lon/lat semantics, boundary distances in a local
projection around each fix, circles by haversine. Nothing here calls into
fixgate; tests/geofence_conformance.rs feeds it fixgate's own output.

Commands:

  fences --seed N --out FENCES.geojson TRACK.jsonl...
      Deterministic fences around each track (JSON Lines of fixes, as
      `fixgate nmea` prints them), named after the file: a star-shaped
      polygon, one with a hole, a multipolygon of two stars and a circle,
      each with its boundary through the track's point cloud.

  check --fences FENCES.geojson --feed FEED.jsonl [options]
      FEED.jsonl is the daemon's feed in order, one SSE event a line:
      {"seq": N, "event": "position"|"geofence"|..., "data": {...}}.
      Replays every device's live fixes through the rules and compares the
      `enter`/`exit` events per device and fence with the daemon's: type,
      and the fix (time, place, sequence) that caused each. Prints a table;
      exits 1 on any mismatch, printing the first few in full (and with
      --strict, when any fix was ambiguous).

  selftest
      The checker against hand-made feeds: right ones pass, wrong ones fail.

The rules, per device and fence, over the device's live fixes in order:
error radius r = accuracy, else hdop * hdop_error_m, else default_error_m;
depth = signed distance in metres to the boundary, positive inside (a point
on the boundary is outside). Outside -> inside (`enter`) when depth > 0 and
depth >= r, or on the enter_fixes-th consecutive fix with depth > 0;
inside -> outside (`exit`) when depth <= -(r + exit_margin_m).

Our projection (x = dlon * cos(lat_fix) * M, y = dlat * M) is not fixgate's
(one plane per fence, scaled at its middle latitude), so depths differ by
millimetres. A fix whose depth lies within TOLERANCE_M of a threshold is
ambiguous: every outcome a depth in that band could give is accepted, and
the daemon's events pick the branch. Such fixes are counted and reported.
A threshold of 0 (the boundary: raw settings, or an error radius of 0) asks
only inside or outside, which does not depend on the projection; there the
band is SIGN_TOLERANCE_M, so raw settings leave (practically) nothing
ambiguous.

fixgate judges a fix at the precision it stores (1e-7 degrees), so the
feed's positions are exactly what was judged.
"""

import argparse
import json
import math
import random
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

try:
    import shapely
    from shapely.affinity import affine_transform
    from shapely.geometry import MultiPolygon, Point, Polygon, mapping, shape
except ImportError:
    sys.exit("geofence_shapely.py needs shapely: python3 -m pip install shapely")

# Metres per degree of latitude on the mean Earth radius fixgate uses.
EARTH_RADIUS_M = 6371008.8
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0  # 111195.08 m
# Depths this close to a threshold may fall either way in fixgate's plane.
TOLERANCE_M = 0.05
# ... except at the boundary itself: inside or not is the same planar
# predicate in lon/lat here and in fixgate's affinely scaled plane (and the
# same haversine for circles), so only rounding can tell them apart.
SIGN_TOLERANCE_M = 1e-6
# How many mismatches are printed in full.
SHOWN = 5


# --------------------------------------------------------------------------
# Shared helpers


def haversine_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres, as geo's Haversine computes it."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def time_ms(text):
    """RFC 3339 time to milliseconds since the epoch."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def ident(text):
    """A fence or device id: only A-Za-z0-9._:- survive."""
    return re.sub(r"[^A-Za-z0-9._:-]", "_", text)


# --------------------------------------------------------------------------
# fences


class Frame:
    """Metres east/north of an origin, and back to degrees."""

    def __init__(self, lat0, lon0):
        self.lat0, self.lon0 = lat0, lon0
        self.kx = math.cos(math.radians(lat0)) * M_PER_DEG

    def xy(self, lat, lon):
        return ((lon - self.lon0) * self.kx, (lat - self.lat0) * M_PER_DEG)

    def lonlat(self, x, y):
        return (self.lon0 + x / self.kx, self.lat0 + y / M_PER_DEG)


def star(rng, centre, cloud, n, lo, hi, floor):
    """A star-shaped ring of n vertices around centre (metres), counter-
    clockwise, each vertex as far out as a random point of the cloud whose
    distance from centre ranks between quantiles lo and hi (so the boundary
    weaves through the cloud). Never closer than floor."""
    cx, cy = centre
    dists = sorted(math.hypot(x - cx, y - cy) for x, y in cloud)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    ring = []
    for a in angles:
        q = rng.uniform(lo, hi)
        d = dists[min(len(dists) - 1, int(q * len(dists)))]
        r = max(floor, d * rng.uniform(0.9, 1.1))
        ring.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return ring


def track_fences(name, fixes, rng):
    """The four fences of one track, as GeoJSON features."""
    lats = [f["lat"] for f in fixes]
    lons = [f["lon"] for f in fixes]
    frame = Frame(sum(lats) / len(lats), sum(lons) / len(lons))
    cloud = [frame.xy(f["lat"], f["lon"]) for f in fixes]
    spread = max(math.hypot(x, y) for x, y in cloud)
    # A parked receiver that never moved still gets fences a few metres away.
    floor = max(1.0, spread * 0.05)
    jitter = max(spread * 0.2, 2.0)

    def near_centroid():
        return (rng.gauss(0, jitter), rng.gauss(0, jitter))

    def plain():
        ring = star(rng, near_centroid(), cloud, rng.randint(20, 50), 0.2, 0.9, floor)
        return Polygon(ring)

    def holed():
        # The outer ring through the cloud's outer part, a star-shaped hole
        # around the same centre through its inner part.
        centre = near_centroid()
        outer = star(rng, centre, cloud, rng.randint(20, 50), 0.6, 1.0, floor * 3)
        hole = star(rng, centre, cloud, rng.randint(20, 40), 0.0, 0.4, floor)
        for _ in range(50):
            polygon = Polygon(outer, [list(reversed(hole))])
            if polygon.is_valid:
                return polygon
            # Shrink the hole towards the centre until it fits.
            hole = [(centre[0] + (x - centre[0]) * 0.8, centre[1] + (y - centre[1]) * 0.8) for x, y in hole]
        return None

    def multi():
        # Two stars around two far-apart points of the track; parts must not
        # overlap, so both shrink until they are apart.
        a = cloud[rng.randrange(len(cloud))]
        b = max(cloud, key=lambda p: math.hypot(p[0] - a[0], p[1] - a[1]))
        b = (b[0] + rng.gauss(0, jitter / 2), b[1] + rng.gauss(0, jitter / 2))
        # A parked receiver's cloud is small: keep the centres apart.
        gap = math.hypot(b[0] - a[0], b[1] - a[1])
        if gap < 3 * floor:
            angle = rng.uniform(0, 2 * math.pi)
            b = (a[0] + 3 * floor * math.cos(angle), a[1] + 3 * floor * math.sin(angle))
        parts = [star(rng, c, cloud, rng.randint(20, 30), 0.0, 0.5, floor) for c in (a, b)]
        for _ in range(100):
            polygons = [Polygon(p) for p in parts]
            if polygons[0].distance(polygons[1]) > 0.5:
                return MultiPolygon(polygons)
            parts = [
                [(c[0] + (x - c[0]) * 0.85, c[1] + (y - c[1]) * 0.85) for x, y in p]
                for c, p in zip((a, b), parts)
            ]
        return None

    def circle():
        # Centre near the middle, rim through the cloud.
        cx, cy = near_centroid()
        dists = sorted(math.hypot(x - cx, y - cy) for x, y in cloud)
        return cx, cy, max(floor, dists[len(dists) // 2] * rng.uniform(0.9, 1.1))

    def ring_lonlat(ring):
        return [list(frame.lonlat(x, y)) for x, y in ring.coords]

    def polygon_coords(polygon):
        return [ring_lonlat(polygon.exterior)] + [ring_lonlat(r) for r in polygon.interiors]

    def made(make):
        geometry = make()
        if geometry is None:
            raise SystemExit(f"{name}: {make.__name__}: no valid geometry; try another --seed")
        return geometry

    out = []
    for make in (plain, holed):
        out.append({"type": "Polygon", "coordinates": polygon_coords(made(make))})
    out.append({"type": "MultiPolygon", "coordinates": [polygon_coords(p) for p in made(multi).geoms]})
    cx, cy, radius = circle()
    out.append({"type": "Point", "coordinates": list(frame.lonlat(cx, cy))})

    features = []
    for suffix, geometry in zip(("star", "holed", "multi", "circle"), out):
        properties = {"name": f"{name} {suffix}"}
        if suffix == "circle":
            properties["radius_m"] = radius
        else:
            assert shape(geometry).is_valid, f"{name}:{suffix}"
        features.append({"type": "Feature", "id": f"{name}:{suffix}", "geometry": geometry, "properties": properties})
    return features


def cmd_fences(args):
    features = []
    for path in args.tracks:
        fixes = read_jsonl(path)
        if fixes:
            name = ident(Path(path).stem)
            features += track_fences(name, fixes, random.Random(f"{args.seed}:{name}"))
    collection = {"type": "FeatureCollection", "features": features}
    Path(args.out).write_text(json.dumps(collection, indent=1) + "\n", encoding="utf-8")
    print(f"{len(features)} fences around {len(args.tracks)} tracks -> {args.out}")


# --------------------------------------------------------------------------
# check


class Fence:
    """One fence and the signed depth of a point in it, in metres."""

    def __init__(self, feature):
        self.id = feature["id"]
        props = feature.get("properties") or {}
        self.watches_more = "speed_limit_kmh" in props or "dwell" in props
        geometry = feature["geometry"]
        if geometry["type"] == "Point":
            self.circle = (geometry["coordinates"][1], geometry["coordinates"][0], float(props["radius_m"]))
            lat, lon, r = self.circle
            dlat = r / M_PER_DEG
            dlon = dlat / max(math.cos(math.radians(lat)), 1e-9)
            self.bounds = (lon - dlon, lat - dlat, lon + dlon, lat + dlat)
        else:
            self.circle = None
            self.area = shape(geometry)
            if not self.area.is_valid:
                raise SystemExit(f"fence {self.id}: invalid geometry ({shapely.is_valid_reason(self.area)})")
            shapely.prepare(self.area)
            self.boundary = self.area.boundary
            self.bounds = self.area.bounds

    def depth(self, lat, lon, reach):
        """Signed distance from the point to the boundary (positive inside),
        or -inf when the point is more than `reach` metres outside."""
        if self.circle:
            clat, clon, r = self.circle
            return r - haversine_m(clat, clon, lat, lon)
        # Outside the fence's box by more than the reach: far outside.
        kx = math.cos(math.radians(lat)) * M_PER_DEG
        west, south, east, north = self.bounds
        dx = max(west - lon, 0.0, lon - east) * kx
        dy = max(south - lat, 0.0, lat - north) * M_PER_DEG
        if math.hypot(dx, dy) > reach:
            return -math.inf
        inside = self.area.contains(Point(lon, lat))
        local = affine_transform(self.boundary, [kx, 0, 0, M_PER_DEG, -lon * kx, -lat * M_PER_DEG])
        d = local.distance(Point(0.0, 0.0))
        return d if inside else -d


class Rules:
    def __init__(self, enter_fixes, exit_margin_m, hdop_error_m, default_error_m):
        self.enter_fixes = enter_fixes
        self.exit_margin_m = exit_margin_m
        self.hdop_error_m = hdop_error_m
        self.default_error_m = default_error_m

    def radius(self, fix):
        if fix.get("accuracy") is not None:
            return fix["accuracy"]
        if fix.get("hdop") is not None:
            return fix["hdop"] * self.hdop_error_m
        return self.default_error_m

    def step(self, state, depth, r):
        """One fix against one fence from state (inside, run): the next
        state and the event ('enter', 'exit' or None)."""
        inside, run = state
        if inside:
            if depth <= -(r + self.exit_margin_m):
                return (False, 0), "exit"
            return state, None
        run = run + 1 if depth > 0 else 0
        if (depth > 0 and depth >= r) or run >= self.enter_fixes:
            return (True, 0), "enter"
        return (False, run), None

    def depths(self, depth, r):
        """The depths fixgate may have computed where we computed `depth`:
        `depth` itself, and either side of every threshold within the band
        of it."""
        if math.isinf(depth):
            return [depth]
        out = [depth]
        for t in (0.0, r, -(r + self.exit_margin_m)):
            if abs(depth - t) <= (TOLERANCE_M if t else SIGN_TOLERANCE_M):
                eps = 1e-9 * max(1.0, abs(t))
                out += [t - eps, t, t + eps]
        return out


def load_feed(path):
    """Live positions per device, in order, and geofence events per
    (device, time); plus counts of what is left out."""
    positions = defaultdict(list)
    events = []
    skipped = defaultdict(int)
    for line in read_jsonl(path):
        kind, data, seq = line["event"], line["data"], line.get("seq")
        if kind == "position":
            if data.get("historic"):
                skipped["historic positions"] += 1
                continue
            data = dict(data, seq=seq, ms=time_ms(data["time"]))
            positions[data["device"]].append(data)
        elif kind == "geofence":
            if data.get("historic"):
                skipped["historic geofence events"] += 1
                continue
            if data["type"] not in ("enter", "exit"):
                skipped[f"{data['type']} events"] += 1
                continue
            events.append(dict(data, seq=seq, ms=time_ms(data["time"])))
    return positions, events, skipped


def check(fences, rules, positions, events):
    """Compares; returns (per-device rows, mismatches, totals)."""
    mismatches = []
    # Each daemon event to the fix that caused it: same device and time (the
    # last such fix before the event, should a device have two).
    index = defaultdict(list)
    for device, fixes in positions.items():
        for i, fix in enumerate(fixes):
            index[(device, fix["ms"])].append(i)
    got = defaultdict(list)  # (device, fence, fix index) -> [types]
    for e in events:
        candidates = index.get((e["device"], e["ms"]), [])
        before = [i for i in candidates if positions[e["device"]][i]["seq"] < e["seq"]]
        i = (before or candidates or [None])[-1]
        if i is None:
            mismatches.append({"what": "event without a live fix of its device at its time", "event": e})
            continue
        fix = positions[e["device"]][i]
        following = positions[e["device"]][i + 1]["seq"] if i + 1 < len(positions[e["device"]]) else math.inf
        if not (fix["seq"] < e["seq"] < following) or (e["lat"], e["lon"]) != (fix["lat"], fix["lon"]):
            mismatches.append({"what": "event not stored with the fix it names", "event": e, "fix": fix})
        got[(e["device"], e["fence"], i)].append(e["type"])
    unknown = {k[1] for k in got} - {f.id for f in fences}
    for fence in sorted(unknown):
        mismatches.append({"what": "event for a fence not in the fences file", "fence": fence})

    rows = []
    for device in sorted(positions):
        fixes = positions[device]
        row = {"device": device, "fixes": len(fixes), "fences": 0, "expected": 0, "got": 0, "ambiguous": 0, "mismatches": 0}
        before = len(mismatches)
        for fence in fences:
            states = {(False, 0)}  # every state fixgate may be in
            plain = (False, 0)  # shapely's own answer, no tolerance
            touched = False
            for i, fix in enumerate(fixes):
                r = rules.radius(fix)
                lat, lon = fix["lat"], fix["lon"]
                depth = fence.depth(lat, lon, r + rules.exit_margin_m + 1.0)
                observed = got.get((device, fence.id, i), [])
                touched |= depth > -(r + rules.exit_margin_m) or bool(observed)
                plain, event = rules.step(plain, depth, r)
                row["expected"] += event is not None
                row["got"] += len(observed)
                outcomes = {rules.step(s, d, r) for s in states for d in rules.depths(depth, r)}
                if len({e for _, e in outcomes}) > 1:
                    row["ambiguous"] += 1
                want = observed[0] if len(observed) == 1 else None
                agreeing = {s for s, e in outcomes if e == want}
                if len(observed) > 1 or not agreeing:
                    mismatches.append(
                        {
                            "what": "events differ",
                            "device": device,
                            "fence": fence.id,
                            "fix": {k: fix.get(k) for k in ("seq", "time", "lat", "lon", "hdop", "accuracy")},
                            "depth_m": round(depth, 4),
                            "error_radius_m": r,
                            "states_before": sorted(states),
                            "expected": sorted({e or "none" for _, e in outcomes}),
                            "got": observed or ["none"],
                        }
                    )
                    # Follow the daemon from here, to report what follows
                    # on its own merits.
                    if want == "enter":
                        agreeing = {(True, 0)}
                    elif want == "exit":
                        agreeing = {(False, 0)}
                    else:
                        agreeing = {(inside, 0) for inside, _ in states}
                states = agreeing
            row["fences"] += touched
        row["mismatches"] = len(mismatches) - before
        rows.append(row)
    return rows, mismatches


def cmd_check(args):
    rules = Rules(args.enter_fixes, args.exit_margin_m, args.hdop_error_m, args.default_error_m)
    collection = json.loads(Path(args.fences).read_text(encoding="utf-8"))
    fences = [Fence(f) for f in collection["features"]]
    positions, events, skipped = load_feed(args.feed)
    rows, mismatches = check(fences, rules, positions, events)
    # Events of the feed not tied to a device row (orphans) count as mismatches too.
    orphans = len(mismatches) - sum(r["mismatches"] for r in rows)

    label = f" ({args.label})" if args.label else ""
    print(
        f"geofence cross-check{label}: enter_fixes={rules.enter_fixes} exit_margin_m={rules.exit_margin_m} "
        f"hdop_error_m={rules.hdop_error_m} default_error_m={rules.default_error_m}, "
        f"ambiguity band ±{TOLERANCE_M} m (±{SIGN_TOLERANCE_M} m at the boundary)"
    )
    header = f"{'device':<34} {'fixes':>6} {'fences':>6} {'expected':>8} {'got':>6} {'ambig':>6} {'mismatch':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['device']:<34} {r['fixes']:>6} {r['fences']:>6} {r['expected']:>8} {r['got']:>6} "
            f"{r['ambiguous']:>6} {r['mismatches']:>8}"
        )
    print("-" * len(header))
    total = {k: sum(r[k] for r in rows) for k in ("fixes", "expected", "got", "ambiguous")}
    print(
        f"{f'{len(rows)} logs, {len(fences)} fences':<34} {total['fixes']:>6} {'':>6} {total['expected']:>8} "
        f"{total['got']:>6} {total['ambiguous']:>6} {len(mismatches):>8}"
    )
    if orphans:
        print(f"{orphans} mismatches not tied to a device's fixes")
    for what, n in sorted(skipped.items()):
        print(f"not compared: {n} {what}")
    if sum(f.watches_more for f in fences):
        print(f"note: {sum(f.watches_more for f in fences)} fences have dwell or speed limits; those events are not compared")

    if not positions or not fences:
        print("FAIL: nothing to compare (no live positions or no fences)")
        return 1
    if total["expected"] == 0 and total["got"] == 0:
        print("FAIL: no geofence event at all: the cross-check would prove nothing")
        return 1
    if args.strict and total["ambiguous"]:
        print(f"FAIL: --strict, and {total['ambiguous']} fixes lie within the band of a threshold")
        return 1
    if mismatches:
        print(f"FAIL: {len(mismatches)} mismatches; the first {min(SHOWN, len(mismatches))}:")
        for m in mismatches[:SHOWN]:
            print(json.dumps(m, default=str))
        return 1
    print("OK: every enter and exit agrees with shapely")
    return 0


# --------------------------------------------------------------------------
# selftest


def cmd_selftest(_args):
    """Hand-made feeds through `check`: the checker must tell right from wrong."""
    # A 100 m square around (52, 5) and a circle of 30 m at its centre.
    half = 50.0
    frame = Frame(52.0, 5.0)
    square = [frame.lonlat(x, y) for x, y in ((-half, -half), (half, -half), (half, half), (-half, half))]
    clon, clat = frame.lonlat(0, 0)
    fences = [
        Fence({"type": "Feature", "id": "sq", "geometry": mapping(Polygon(square)), "properties": {}}),
        Fence(
            {
                "type": "Feature",
                "id": "c",
                "geometry": {"type": "Point", "coordinates": [clon, clat]},
                "properties": {"radius_m": 30.0},
            }
        ),
    ]
    # A drive east along y = 0 from x = -100 to 100 and back, hdop 1.
    xs = list(range(-100, 101, 5)) + list(range(100, -101, -5))
    fixes = []
    for i, x in enumerate(xs):
        lon, lat = frame.lonlat(x + 0.3, 0)
        fixes.append({"seq": 2 * i + 1, "time": f"2020-01-01T00:{i // 60:02}:{i % 60:02}.000Z", "lat": lat, "lon": lon, "hdop": 1.0})
    for f in fixes:
        f["device"] = "d"
        f["ms"] = time_ms(f["time"])

    def events_where(rules):
        """What a correct daemon sends: the plain rules on exact depths."""
        out = []
        for fence in fences:
            state = (False, 0)
            for f in fixes:
                state, e = rules.step(state, fence.depth(f["lat"], f["lon"], 1e9), rules.radius(f))
                if e:
                    out.append(
                        {"device": "d", "fence": fence.id, "type": e, "time": f["time"], "ms": f["ms"],
                         "lat": f["lat"], "lon": f["lon"], "seq": f["seq"] + 1}
                    )
        return out

    def moved(event, by):
        """The event as if a fix `by` places later had caused it."""
        i = next(i for i, f in enumerate(fixes) if f["ms"] == event["ms"]) + by
        f = fixes[i]
        return dict(event, time=f["time"], ms=f["ms"], lat=f["lat"], lon=f["lon"], seq=f["seq"] + 1)

    failures = []
    for rules in (Rules(1, 0.0, 0.0, 0.0), Rules(3, 10.0, 5.0, 10.0)):
        right = events_where(rules)
        name = f"enter_fixes={rules.enter_fixes}"
        _, m = check(fences, rules, {"d": fixes}, right)
        if m:
            failures.append(f"{name}: a correct feed failed: {m[0]}")
        if len(right) != 8:
            failures.append(f"{name}: expected 8 events (4 per fence), made {len(right)}")
        wrongs = {
            "an event missing": right[1:],
            "an event one fix late": [moved(right[0], 1)] + right[1:],
            "an extra event": right + [dict(right[-1], type="enter")],
            "enter and exit swapped": [dict(e, type="exit" if e["type"] == "enter" else "enter") for e in right],
            "an unknown fence": right + [dict(right[0], fence="nope")],
        }
        for what, feed in wrongs.items():
            _, m = check(fences, rules, {"d": fixes}, feed)
            if not m:
                failures.append(f"{name}: {what} went unnoticed")
    # The hysteresis run must differ from the raw one: later enters, later exits.
    raw = events_where(Rules(1, 0.0, 0.0, 0.0))
    hyst = events_where(Rules(3, 10.0, 5.0, 10.0))
    if not all(h["ms"] > r["ms"] for r, h in zip(raw, hyst)):
        failures.append("hysteresis did not delay every event")
    # 1 cm inside the edge: certainly inside (the boundary's band is tiny),
    # but with an error radius of 5 m, 1 cm from "wholly inside": ambiguous.
    for inside, rules, r, want in ((0.01, Rules(1, 0.0, 0.0, 0.0), 0.0, {"enter"}),
                                   (5.01, Rules(3, 10.0, 5.0, 10.0), 5.0, {None, "enter"})):
        lon, lat = frame.lonlat(half - inside, 0)
        d = fences[0].depth(lat, lon, 1e9)
        got = {rules.step((False, 0), x, r)[1] for x in rules.depths(d, r)}
        if got != want:
            failures.append(f"a fix {inside} m inside the edge (depth {d}, radius {r}): outcomes {got}, not {want}")
    # The local projection measures true metres: 20 m east of the edge is 20 m.
    lon, lat = frame.lonlat(half + 20, 0)
    if abs(fences[0].depth(lat, lon, 1e9) + 20) > 0.01 or abs(fences[1].depth(lat, lon, 1e9) + 40) > 0.01:
        failures.append("depths 20 m east of the square and 40 m out of the circle are wrong")
    for f in failures:
        print("FAIL:", f)
    print("selftest:", "FAILED" if failures else "ok")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fences", help="generate fences around tracks")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("tracks", nargs="+")
    p.set_defaults(run=cmd_fences)
    p = sub.add_parser("check", help="compare the daemon's events with shapely's")
    p.add_argument("--fences", required=True)
    p.add_argument("--feed", required=True)
    p.add_argument("--enter-fixes", type=int, default=3)
    p.add_argument("--exit-margin-m", type=float, default=10.0)
    p.add_argument("--hdop-error-m", type=float, default=5.0)
    p.add_argument("--default-error-m", type=float, default=10.0)
    p.add_argument("--label", default="", help="named in the table's title")
    p.add_argument("--strict", action="store_true", help="fail when any fix is ambiguous")
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("selftest", help="the checker against hand-made feeds")
    p.set_defaults(run=cmd_selftest)
    args = parser.parse_args()
    sys.exit(args.run(args) or 0)


if __name__ == "__main__":
    main()
