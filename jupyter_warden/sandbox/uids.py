"""Host uids for sandboxed kernels: one per subject, allocated once and kept in the store.

A uid is never shared by two subjects, never the server's own, and never one
that already names an account on the host (``/etc/passwd``).
"""

from __future__ import annotations

import os
import pwd

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..store import Store, StoreError
from ..store.models import KernelUid


class UidRangeExhausted(StoreError):
    """Every uid of c.Warden.sandbox_uid_range is taken."""


def _free_on_host(uid: int) -> bool:
    if uid == os.getuid() or uid == os.geteuid():
        return False
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


class KernelUids:
    """Allocates and looks up the uid of a subject's kernels."""

    def __init__(self, store: Store, first: int, last: int):
        self.store, self.first, self.last = store, first, last

    def uid_for(self, subject: str) -> int:
        for _attempt in range(5):
            try:
                with self.store.transaction() as s:
                    row = s.execute(select(KernelUid.uid).where(KernelUid.subject == subject)).first()
                    if row is not None:
                        return row[0]
                    uid = self._first_free(set(s.execute(select(KernelUid.uid)).scalars()))
                    s.add(KernelUid(subject=subject, uid=uid))
                    s.flush()
                    return uid
            except IntegrityError:
                continue  # another process took that uid, or this subject, first: look again
        raise StoreError("could not allocate a kernel uid (too much contention); try again")

    def _first_free(self, taken: set[int]) -> int:
        for uid in range(self.first, self.last + 1):
            if uid not in taken and _free_on_host(uid):
                return uid
        raise UidRangeExhausted(
            f"no free kernel uid left in {self.first}-{self.last}; widen c.Warden.sandbox_uid_range"
        )
