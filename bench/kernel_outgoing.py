"""Benchmark: the kernel guard's own work per outgoing IOPub message, in one process.

The end-to-end benchmark (bench/kernel_channels.py) needs a quiet machine:
its throughput swings by ±0.15 when others share the cores. This one times
only the guard's per-message path (``_pass_outgoing`` on the real
``KernelChannelGuard``, with a real jupyter_client Session and the wire
frames ipykernel sends for ``print(i, flush=True)``), next to what the guard
did before: json-decoding every message's header and parent header.

    python bench/kernel_outgoing.py [--messages 200000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from types import SimpleNamespace

from jupyter_client.session import Session

from jupyter_warden.audit.log import DropRecords
from jupyter_warden.enforce.kernel_channels import KernelChannelGuard, OutgoingMessage
from jupyter_warden.sealed.execution import SealedRuns


class Probe(KernelChannelGuard):
    """The guard's state as ``prepare`` sets it, without a server around it."""

    def __init__(self, session: Session):
        self.session, self.closing, self.paths = session, False, ()
        # A real SealedRuns, for a kernel that never ran a sealed cell (the common case).
        self.warden = SimpleNamespace(sandbox_runner=None, sealed_runs=SealedRuns(key_ring=None))
        self.kernel_id = "bench-kernel"
        self.websocket_handler = SimpleNamespace(ws_connection=None)
        self._executions, self._parent_ids = collections.OrderedDict(), {}
        self._drop_records = DropRecords(1.0)
        self._unsent, self._unsent_parent = 0, None
        # Output cap out of reach: 200,000 messages of ~330 bytes pass the default 64 MB.
        self._max_message_bytes, self._max_output_bytes = 4 * 1024 * 1024, 1 << 40
        self._max_send_buffer = 16 * 1024 * 1024


def frames(session: Session, count: int) -> list[list[bytes]]:
    parent = session.msg("execute_request", {"code": "for i in range(20000): print(i, flush=True)"})
    out = []
    for i in range(count):
        msg = session.msg("stream", {"name": "stdout", "text": f"{i}\n"}, parent=parent["header"])
        out.append([b"stream.stdout", *session.serialize(msg)])
    return out


def per_message(fn, wire) -> float:
    t0 = time.perf_counter()
    for msg_list in wire:
        fn(msg_list)
    return (time.perf_counter() - t0) / len(wire) * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    session = Session(key=b"bench")
    wire = frames(session, args.messages)
    guard = Probe(session)

    def now(msg_list):
        _, fed = session.feed_identities(msg_list)
        assert guard._pass_outgoing(OutgoingMessage("iopub", session, parts=fed[1:]))

    def before(msg_list):  # the previous guard: both headers decoded for every message
        _, fed = session.feed_identities(msg_list)
        parts = fed[1:]
        header, parent = session.unpack(parts[0]), session.unpack(parts[1])
        return header.get("msg_type"), parent.get("msg_id"), sum(len(p) for p in parts)

    def floor(msg_list):  # what jupyter_server itself does first, for scale
        session.feed_identities(msg_list)

    print(f"{args.messages:,} stream messages, median of {args.repeats} passes, µs per message")
    for name, fn in (("guard now", now), ("guard before", before), ("feed_identities alone", floor)):
        times = []
        for _ in range(args.repeats):
            guard._executions.clear()  # a fresh execution each pass: its output cap starts at 0
            times.append(per_message(fn, wire))
        times.sort()
        print(f"{name:<24} {times[len(times) // 2]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
