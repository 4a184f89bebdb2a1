"""Appending, reading, verifying and exporting audit records."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..store import Store
from ..store.models import AuditHead, AuditRecord, utcnow
from .events import check_event

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "path", "outcome", "reason", "grant_id", "client", "details")


@dataclass(frozen=True)
class AuditRecordView:
    seq: int
    time: dt.datetime
    actor: str
    action: str
    path: str | None
    outcome: str
    reason: str | None
    grant_id: int | None
    client: str | None
    details: dict | None

    def as_json(self) -> dict:
        data = asdict(self)
        data["time"] = self.time.isoformat()
        return data


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad: int | None = None
    message: str = ""


def load_or_create_key(state_dir: str | os.PathLike) -> bytes:
    """The chain's HMAC key, a 0600 file in the state folder."""
    path = Path(state_dir) / "audit.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


def _canonical(values: dict) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str).encode()


class AuditLog:
    def __init__(self, store: Store, key: bytes):
        self.store = store
        self.key = key

    def _hash(self, prev_hash: str, values: dict) -> str:
        return hmac.new(self.key, prev_hash.encode() + _canonical(values), hashlib.sha256).hexdigest()

    @staticmethod
    def _values(row_or_dict) -> dict:
        get = row_or_dict.get if isinstance(row_or_dict, dict) else lambda k: getattr(row_or_dict, k)
        values = {k: get(k) for k in FIELDS}
        values["time"] = values["time"].astimezone(dt.timezone.utc).isoformat()
        return values

    def record(
        self,
        actor: str,
        action: str,
        outcome: str,
        path: str | None = None,
        reason: str | None = None,
        grant_id: int | None = None,
        client: str | None = None,
        details: dict | None = None,
        session: Session | None = None,
    ) -> int:
        """Append one record; returns its sequence number.

        With ``session``, the record joins that transaction, so a change and
        its record commit (or vanish) together; otherwise it has its own.
        """
        check_event(action)
        if session is not None:
            return self._append(session, actor, action, outcome, path, reason, grant_id, client, details)
        with self.store.transaction() as s:
            return self._append(s, actor, action, outcome, path, reason, grant_id, client, details)

    def _append(self, s, actor, action, outcome, path, reason, grant_id, client, details) -> int:
        # Taking the head's row lock first serialises appenders across
        # processes, so the chain never forks.
        seq, prev = s.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=AuditHead.seq + 1)
            .returning(AuditHead.seq, AuditHead.hash)
        ).one()
        values = {
            "seq": seq,
            "time": utcnow(),
            "actor": actor,
            "action": action,
            "path": path,
            "outcome": outcome,
            "reason": reason,
            "grant_id": grant_id,
            "client": client,
            "details": json.dumps(details, sort_keys=True) if details else None,
        }
        digest = self._hash(prev, self._values(values))
        s.add(AuditRecord(**values, prev_hash=prev, hash=digest))
        s.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
        s.flush()
        return seq

    # -- reading ------------------------------------------------------------

    @staticmethod
    def _view(row: AuditRecord) -> AuditRecordView:
        return AuditRecordView(
            row.seq,
            row.time,
            row.actor,
            row.action,
            row.path,
            row.outcome,
            row.reason,
            row.grant_id,
            row.client,
            json.loads(row.details) if row.details else None,
        )

    def query(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        actor: str | None = None,
        path: str | None = None,
        under: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecordView]:
        q = select(AuditRecord)
        if since:
            q = q.where(AuditRecord.time >= since)
        if until:
            q = q.where(AuditRecord.time < until)
        if actor:
            q = q.where(AuditRecord.actor == actor)
        if path is not None:
            q = q.where(AuditRecord.path == path)
        if under is not None and under != "":
            q = q.where((AuditRecord.path == under) | AuditRecord.path.startswith(under + "/", autoescape=True))
        q = q.order_by(AuditRecord.seq.desc() if newest_first else AuditRecord.seq)
        if limit:
            q = q.limit(limit)
        with self.store.transaction() as s:
            return [self._view(r) for r in s.scalars(q)]

    def tail(self, n: int = 20) -> list[AuditRecordView]:
        return list(reversed(self.query(limit=n, newest_first=True)))

    def _head_moved(self, seq: int) -> bool:
        with self.store.transaction() as s:
            return s.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one() != seq

    def verify(self, batch: int = 5000, _retry: int = 3) -> VerifyResult:
        """Walk the chain; name the first record that was changed, deleted or reordered."""
        prev = GENESIS
        expected_seq = 1
        count = 0
        with self.store.transaction() as s:
            head_seq, head_hash = s.execute(
                select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
            ).one()
            last_id = 0
            while True:
                rows = s.scalars(
                    select(AuditRecord).where(AuditRecord.id > last_id).order_by(AuditRecord.id).limit(batch)
                ).all()
                if not rows:
                    break
                for row in rows:
                    last_id = row.id
                    count += 1
                    if row.seq != expected_seq:
                        kind = "deleted" if row.seq > expected_seq else "reordered or duplicated"
                        return VerifyResult(
                            False, count, expected_seq,
                            f"record {expected_seq} is missing or out of place (found {row.seq} "
                            f"where {expected_seq} belongs): records were {kind}",
                        )
                    if row.prev_hash != prev or row.hash != self._hash(prev, self._values(row)):
                        return VerifyResult(
                            False, count, row.seq,
                            f"record {row.seq} does not match its hash: it, or the one before, was changed",
                        )
                    prev = row.hash
                    expected_seq += 1
        if head_seq != expected_seq - 1 or head_hash != prev:
            if self._head_moved(head_seq) and _retry > 0:
                # A record was appended while we walked (SQLite reads are not one
                # snapshot here): walk again rather than report a live log as cut.
                return self.verify(batch, _retry - 1)
            return VerifyResult(
                False, count, expected_seq,
                f"the log ends at record {expected_seq - 1} but {head_seq} were written: "
                "records at the end were deleted",
            )
        return VerifyResult(True, count, None, f"{count} records, chain intact")

    def export(self, out: io.TextIOBase, fmt: str = "jsonl", since: dt.datetime | None = None) -> int:
        records = self.query(since=since)
        if fmt == "jsonl":
            for r in records:
                out.write(json.dumps(r.as_json(), sort_keys=True) + "\n")
        elif fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=list(FIELDS))
            writer.writeheader()
            for r in records:
                row = r.as_json()
                row["details"] = json.dumps(row["details"], sort_keys=True) if row["details"] else ""
                writer.writerow(row)
        else:
            raise ValueError(f"unknown format {fmt!r}: use jsonl or csv")
        return len(records)


def iter_lines(records: Iterable[AuditRecordView]) -> Iterator[str]:
    for r in records:
        yield (
            f"{r.seq:>6} {r.time.astimezone().strftime('%Y-%m-%d %H:%M:%S')} {r.outcome:5} "
            f"{r.actor:20} {r.action:18} {r.path if r.path is not None else '-'}"
            + (f"  ({r.reason})" if r.reason else "")
        )


class DropRecords:
    """One connection's records of dropped messages, at most one per ``interval`` seconds.

    A flood of bad messages must not fill the log: between two records the
    drops are counted, and the next record says how many were left out.
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0

    def admit(self, details: dict | None) -> tuple[bool, dict | None]:
        """(whether to write a record now, its details with the count left out)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return False, details
        self._last = now
        if self._suppressed:
            details = {**(details or {}), "suppressed_since_last": self._suppressed}
            self._suppressed = 0
        return True, details
