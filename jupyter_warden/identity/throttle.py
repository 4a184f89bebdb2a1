"""Slows failed sign-ins down, per user name and per client address.

After ``free_attempts`` failures for a key, each further attempt must wait
``base_delay * 2**(extra failures)`` seconds, capped at ``max_delay``. The
key for a name is counted whether or not the user exists, so the throttle
itself says nothing about who has an account. State is per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0


@dataclass
class SignInThrottle:
    free_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    max_records: int = 100_000
    clock: callable = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)

    def _delay(self, record: _Record) -> float:
        extra = record.failures - self.free_attempts
        if extra < 0:
            return 0.0
        return min(self.base_delay * 2**extra, self.max_delay)

    def retry_after(self, *keys: str) -> float:
        """Seconds to wait before any of ``keys`` may try again (0: go ahead)."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is None:
                continue
            remaining = record.last_failure + self._delay(record) - now
            if record.failures and now - record.last_failure > 2 * self.max_delay:
                # Long quiet: forget the key, so the table can't grow forever.
                del self._records[key]
                continue
            wait = max(wait, remaining)
        return max(wait, 0.0)

    def forgive(self, key: str) -> None:
        """Take back one failure counted by ``failed``."""
        record = self._records.get(key)
        if record is not None:
            record.failures -= 1
            if record.failures <= 0:
                del self._records[key]

    def failed(self, *keys: str) -> None:
        now = self.clock()
        if len(self._records) > self.max_records:
            # Many distinct names from many addresses: forget the oldest half
            # rather than let the table eat the server's memory.
            oldest = sorted(self._records, key=lambda k: self._records[k].last_failure)
            for key in oldest[: len(oldest) // 2]:
                del self._records[key]
        for key in keys:
            record = self._records.setdefault(key, _Record())
            record.failures += 1
            record.last_failure = now

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._records.pop(key, None)
