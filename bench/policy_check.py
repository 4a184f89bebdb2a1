"""Benchmark: ``PolicyEngine.check`` on a large store (issue 3, "Benchmark").

Builds a store of 100,000 users in 200 groups each, 1,000,000 grants on a
tree 10 folders deep, then times cached and uncached checks and prints
p50/p99 next to the targets. It measures; a missed target does not fail.

    python bench/policy_check.py [--scale 0.1] [--db URL] [--samples N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.engine import Actor, PolicyEngine
from jupyter_warden.policy.levels import LEVELS
from jupyter_warden.policy.paths import ancestors
from jupyter_warden.store import Store
from jupyter_warden.store.models import Grant, Group, User

USERS = 100_000
GRANTS = 1_000_000
GROUPS = 2_000
GROUPS_PER_USER = 200
DEPTH = 10
# Folders under each folder, by depth: 20 top folders, then narrower; the
# tree has about 7 million folders at depth 10, far more than are granted.
BRANCHING = (20, 10, 10, 5, 3, 3, 3, 3, 3, 3)
# Share of grants placed at each depth (deeper folders are far more numerous).
DEPTH_WEIGHTS = (0.5, 1, 2, 4, 8, 16.9, 16.9, 16.9, 16.9, 16.9)
SUBJECT_KINDS = (("user", 0.5), ("group", 0.48), ("authenticated", 0.02))
GRANT_LEVELS = (("read", 40), ("read-run", 15), ("read-write", 15), ("read-write-run", 15),
                ("manage", 5), ("none", 10))
assert all(level in LEVELS for level, _ in GRANT_LEVELS)
CAPABILITY_MIX = ("read",) * 6 + ("write",) * 2 + ("run", "manage")
BATCH = 50_000

TARGET_CACHED_P99_NS = 20_000
TARGET_UNCACHED_P99_NS = 2_000_000


def user_name(i: int) -> str:
    return f"u{i:06d}"


def group_name(i: int) -> str:
    return f"g{i:04d}"


def random_path(rng: random.Random, depth: int) -> str:
    return "/".join(f"d{d}-{rng.randrange(BRANCHING[d])}" for d in range(depth))


def extend_to_leaf(rng: random.Random, folder: str) -> str:
    """A notebook at depth 10 under ``folder``."""
    depth = folder.count("/") + 1 if folder else 0
    parts = [folder] if folder else []
    parts += [f"d{d}-{rng.randrange(BRANCHING[d])}" for d in range(depth, DEPTH - 1)]
    parts.append(f"nb{rng.randrange(1000)}.ipynb")
    return "/".join(parts)


# -- loading --------------------------------------------------------------


def load_memberships(conn, users: int, rng: random.Random) -> None:
    """Each user in GROUPS_PER_USER distinct groups: start + j * stride (mod GROUPS),
    the stride coprime with GROUPS, so the sets vary from user to user."""
    strides = [d for d in range(1, GROUPS) if math.gcd(d, GROUPS) == 1]
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO group_members (group_id, user_id) VALUES ({marker}, {marker})"
    # SQLite builds an index faster in one sort than row by row: drop the
    # two plain indexes for the load and create them again, as they were.
    indexes = []
    if conn.dialect.name == "sqlite":
        indexes = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'group_members' AND sql IS NOT NULL"
        ).all()
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    batch: list[tuple[int, int]] = []
    for u in range(1, users + 1):
        start, stride = rng.randrange(GROUPS), rng.choice(strides)
        batch.extend(((start + j * stride) % GROUPS + 1, u) for j in range(GROUPS_PER_USER))
        if len(batch) >= BATCH * 4:
            conn.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        conn.exec_driver_sql(sql, batch)
    for _, create in indexes:
        conn.exec_driver_sql(create)


def bulk_load(store: Store, users: int, grants: int, rng: random.Random):
    """Fill the store in one transaction; return the grant paths of each
    subject, and the seconds each part took."""
    now = dt.datetime.now(dt.timezone.utc)
    later = now + dt.timedelta(days=365)
    by_subject: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # Bulk-load settings for this connection only; the benchmark's
            # readers use the store's ordinary connections.
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-1000000")
        for start in range(0, users, BATCH):
            conn.execute(
                insert(User),
                [
                    {"id": i + 1, "name": user_name(i), "name_key": user_name(i),
                     "admin": False, "created": now}
                    for i in range(start, min(users, start + BATCH))
                ],
            )
        conn.execute(
            insert(Group),
            [{"id": g + 1, "name": group_name(g), "name_key": group_name(g), "created": now}
             for g in range(GROUPS)],
        )
        load_memberships(conn, users, rng)
        timings["users, groups, memberships"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        kinds, kind_weights = zip(*SUBJECT_KINDS)
        levels, level_weights = zip(*GRANT_LEVELS)
        depths = range(1, DEPTH + 1)
        seen: set[tuple[str, str]] = set()
        rows: list[dict] = []
        made = 0
        while made < grants:
            kind = rng.choices(kinds, kind_weights)[0]
            if kind == "user":
                subject = f"user:{user_name(rng.randrange(users))}"
            elif kind == "group":
                subject = f"group:{group_name(rng.randrange(GROUPS))}"
            else:
                subject = "authenticated"
            path = random_path(rng, rng.choices(depths, DEPTH_WEIGHTS)[0])
            if (path, subject) in seen:
                continue
            seen.add((path, subject))
            by_subject.setdefault(subject, []).append(path)
            rows.append({
                "path": path,
                "subject": subject,
                "level": rng.choices(levels, level_weights)[0],
                "not_before": None,
                # A few grants with an end date, so the time-window code runs.
                "not_after": later if rng.random() < 0.05 else None,
                "created_by": "bench",
                "created": now,
            })
            made += 1
            if len(rows) >= BATCH:
                conn.execute(insert(Grant), rows)
                rows = []
        if rows:
            conn.execute(insert(Grant), rows)
        t2 = time.perf_counter()
    timings["grants"] = t2 - t1
    timings["commit"] = time.perf_counter() - t2
    return by_subject, timings


def grants_by_subject(store: Store) -> dict[str, list[str]]:
    """The same map as bulk_load returns, read back from a kept store."""
    by_subject: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for path, subject in conn.execute(select(Grant.path, Grant.subject)):
            by_subject.setdefault(subject, []).append(path)
    return by_subject


# -- sampling -------------------------------------------------------------


def make_actors(store: Store, users: int, count: int, rng: random.Random) -> list[Actor]:
    """Actors as the server makes them: the account (with its groups) from the store."""
    accounts = Accounts(store)
    names = rng.sample(range(users), count)
    actors = [Actor.for_account(accounts.get_user(user_name(i))) for i in names]
    assert all(len(a.groups) == GROUPS_PER_USER for a in actors)
    return actors


def make_pairs(actors, by_subject, count, rng) -> list[tuple[Actor, str, str]]:
    """(actor, capability, path) triples; half under a folder one of the actor's
    subjects holds a grant on (so the engine has grants to unite), half anywhere."""
    pairs = []
    for _ in range(count):
        actor = rng.choice(actors)
        candidates = by_subject.get(actor.subject) or []
        if rng.random() < 0.5:
            group = rng.choice(sorted(actor.groups))
            candidates = candidates + by_subject.get(f"group:{group}", [])
        folder = rng.choice(candidates) if candidates and rng.random() < 0.5 else ""
        pairs.append((actor, rng.choice(CAPABILITY_MIX), extend_to_leaf(rng, folder)))
    return pairs


def timed(engine: PolicyEngine, pairs, before=None) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    check = engine.check
    gc.collect()
    for actor, capability, path in pairs:
        if before is not None:
            before()
        t0 = clock()
        check(actor, capability, path)
        samples.append(clock() - t0)
    return samples


def percentile(samples: list[int], q: float) -> int:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    return f"{ns / 1_000_000:.2f} ms"


def report_row(name, samples, target_ns=None):
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    if target_ns is None:
        target, verdict = "", ""
    else:
        target = f"p99 ≤ {fmt_ns(target_ns)}"
        verdict = "PASS" if p99 <= target_ns else "MISS"
    print(f"{name:<34} {len(samples):>7} {fmt_ns(p50):>10} {fmt_ns(p99):>10}  {target:<14} {verdict}")
    return p99


# -- where the time goes ----------------------------------------------------


def breakdown(store: Store, pairs) -> dict[str, list[int]]:
    """Time the parts of a check on their own, without copying the engine:
    building the actor's subjects (done on every call, cached or not), and
    the grants query sent as plain SQL, in the engine's shape and by path only."""
    clock = time.perf_counter_ns
    out: dict[str, list[int]] = {"subjects": [], "both": [], "path_only": []}
    for actor, _, path in pairs:
        t0 = clock()
        subjects = actor.subjects()
        out["subjects"].append(clock() - t0)
    with store.engine.connect() as conn:
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"

        def marks(n):
            return ", ".join([marker] * n)

        for actor, _, path in pairs:
            chain, subjects = ancestors(path), actor.subjects()
            t0 = clock()
            conn.exec_driver_sql(
                "SELECT id, path, subject, level, not_before, not_after FROM grants "
                f"WHERE path IN ({marks(len(chain))}) AND subject IN ({marks(len(subjects))})",
                (*chain, *subjects),
            ).all()
            out["both"].append(clock() - t0)
            wanted = set(subjects)
            t0 = clock()
            rows = conn.exec_driver_sql(
                f"SELECT id, path, subject FROM grants WHERE path IN ({marks(len(chain))})",
                tuple(chain),
            ).all()
            [r for r in rows if r[2] in wanted]
            out["path_only"].append(clock() - t0)
    return out


# -- main -----------------------------------------------------------------


def open_store(args, tmp: str, users: int, grants: int, rng: random.Random):
    """The loaded store, and the grant paths of each subject."""
    if args.keep:
        url = f"sqlite:///{Path(args.keep).resolve()}"
    else:
        url = args.db or f"sqlite:///{Path(tmp) / 'warden.db'}"
    store = Store(url)
    store.upgrade()
    with store.transaction() as s:
        loaded = s.scalar(select(func.count()).select_from(User))
    print(f"policy.check on {store.engine.dialect.name}: {users:,} users, {grants:,} grants, "
          f"{GROUPS:,} groups ({GROUPS_PER_USER} per user), paths {DEPTH} deep")
    if loaded:
        if not args.keep:
            sys.exit(f"refusing: {store.display_url} is not empty")
        if loaded != users:
            sys.exit(f"{args.keep} holds {loaded:,} users, not {users:,}: delete it first")
        print(f"reusing {args.keep}")
        return store, grants_by_subject(store)
    t0 = time.perf_counter()
    by_subject, timings = bulk_load(store, users, grants, rng)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    size = ""
    if store.engine.dialect.name == "sqlite":
        size = f", {Path(store.engine.url.database).stat().st_size / 1e6:.0f} MB"
    print(f"loaded in {time.perf_counter() - t0:.1f} s ({parts}){size}")
    return store, by_subject


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float,
                        default=float(os.environ.get("WARDEN_BENCH_SCALE", "1")),
                        help="fraction of the full data set (users, grants); "
                        "default 1 or $WARDEN_BENCH_SCALE")
    parser.add_argument("--db", help="URL of an EMPTY database to fill (default: a "
                        "temporary SQLite file, deleted afterwards)")
    parser.add_argument("--keep", metavar="FILE", help="SQLite file to fill and keep, or "
                        "to reuse if it was filled by an earlier run at the same scale")
    parser.add_argument("--samples", type=int, default=5000, help="uncached samples")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    users = max(GROUPS_PER_USER, int(USERS * args.scale))
    grants = max(1000, int(GRANTS * args.scale))
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        store, by_subject = open_store(args, tmp, users, grants, rng)
        engine = PolicyEngine(store)
        actors = make_actors(store, users, 300, rng)
        warm = make_pairs(actors, by_subject, 2000, rng)
        fresh = make_pairs(actors, by_subject, args.samples, rng)
        polled = make_pairs(actors, by_subject, max(500, args.samples // 5), rng)

        # Warm the store's connection and page cache on pairs not measured.
        timed(engine, make_pairs(actors, by_subject, 500, rng))
        uncached = timed(engine, fresh)
        timed(engine, warm)
        cached = [ns for _ in range(5) for ns in timed(engine, warm)]
        with_poll = timed(engine, polled, before=engine.invalidate)
        allowed = sum(engine.check(*p).allowed for p in fresh)

        print()
        print(f"{'check':<34} {'samples':>7} {'p50':>10} {'p99':>10}  {'target':<14} result")
        report_row("cached", cached, TARGET_CACHED_P99_NS)
        report_row("uncached (new actor/path pairs)", uncached, TARGET_UNCACHED_P99_NS)
        report_row("uncached + version poll", with_poll)
        parts = breakdown(store, fresh[:2000])
        print("where the time goes (parts timed alone):")
        report_row("  actor.subjects() (every call)", parts["subjects"])
        report_row("  grants query, plain SQL", parts["both"])
        report_row("  same, by path only + set filter", parts["path_only"])
        print(f"\n{allowed} of {len(fresh)} uncached checks were allowed.")
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
