"""Benchmark: the execute round trip of a sealed cell against the same code unsealed (issue 6).

Starts one real server with the jupyter_warden extension, a kernel on a
notebook through POST /api/sessions, and speaks the v1 kernel protocol over
a raw websocket, as bench/kernel_channels.py does. The same cell, `1+1`,
runs as clear code and as a sealed placeholder (which the guard checks,
opens, and sends with its purge line; the kernel purges its caches after),
in alternating blocks; p50 and p99 of each, and the p50 difference against
the target of at most 2 ms added.

It measures; a missed target does not fail.

    python bench/sealed_run.py [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from jupyter_warden.master_key import load_master_key
from jupyter_warden.sealed import KeyRing
from jupyter_warden.store import Store, default_db_url

sys.path.insert(0, str(Path(__file__).parent))
from kernel_channels import BLOCK, NB_FOLDER, NB_PATH, NO_RATE_LIMIT, USER, Kernel, ms, pct, prepare_warden_state  # noqa: E402
from listing import NOTEBOOK, Server  # noqa: E402

KEY = "bench-checks"
CODE = "1+1"
TARGET_ADDED_NS = 2_000_000  # p50 sealed - p50 clear, at most


def prepare_key(state: Path) -> str:
    """A sealing key the bench user may use, and CODE sealed under it."""
    store = Store(default_db_url(state))
    ring = KeyRing(store, load_master_key(state))
    ring.create(KEY, by="bench")
    ring.grant(KEY, f"user:{USER}", by="bench")
    placeholder = ring.seal(KEY, "bench-cell", CODE)
    store.dispose()
    return placeholder


async def round_trip(kernel: Kernel, code: str) -> int:
    t0 = time.perf_counter_ns()
    status, _, _ = await kernel.execute(code)
    elapsed = time.perf_counter_ns() - t0
    if status != "ok":
        kernel.server.fail(f"answered {status!r} to {code[:40]!r}")
    return elapsed


async def measure(kernel: Kernel, placeholder: str, runs: int) -> None:
    await kernel.connect()
    cells = {"clear": CODE, "sealed": placeholder}
    for code in cells.values():
        for _ in range(20):
            await round_trip(kernel, code)
    latency: dict[str, list[int]] = {name: [] for name in cells}
    names = list(cells)
    for i in range(0, runs, BLOCK):
        for name in names if (i // BLOCK) % 2 == 0 else names[::-1]:
            for _ in range(min(BLOCK, runs - i)):
                latency[name].append(await round_trip(kernel, cells[name]))

    print(f"\nexecute round trip ({CODE} → execute_reply and idle), {runs} runs each, "
          f"in alternating blocks of {BLOCK}, one kernel")
    print(f"{'cell':<8} {'p50':>10} {'p99':>10}")
    for name in names:
        print(f"{name:<8} {ms(pct(latency[name], 0.5)):>10} {ms(pct(latency[name], 0.99)):>10}")
    added = pct(latency["sealed"], 0.5) - pct(latency["clear"], 0.5)
    verdict = "PASS" if added <= TARGET_ADDED_NS else "MISS"
    print(f"added by sealing, p50: {ms(added)}  target ≤ {ms(TARGET_ADDED_NS)}  {verdict}")


def kernel_side(runs: int = 400) -> None:
    """What the line put before sealed code costs the kernel, in CPU time (steady under load).

    The round trip above is wall time, which a loaded machine swamps. Here an
    in-process IPython shell runs `1+1` as a clear cell and after each form of
    the purge's first line (the short one that sandboxed kernels and kernels on
    the server's Python import, and the long one that carries the module's
    text), with the purge itself running after each. ipykernel also hashes each
    cell's text (pure-Python murmur2), which this leaves out: that cost grows
    with the line's length, so the long line's figure is the lower bound.
    """
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_warden.sealed.execution import ARM_LINE, SHORT_ARM_LINE

    shell = InteractiveShell.instance()

    def cpu_ms(code: str) -> float:
        for _ in range(30):
            shell.run_cell(code, store_history=False, silent=True)
        started = time.process_time()
        for _ in range(runs):
            shell.run_cell(code, store_history=False, silent=True)
        return (time.process_time() - started) / runs * 1000

    clear = cpu_ms("1+1")
    print(f"\nkernel side, CPU time per cell, {runs} runs each (in-process IPython):")
    print(f"clear `1+1`                                  {clear:6.3f} ms")
    for name, line in (("short first line", SHORT_ARM_LINE), ("long first line", ARM_LINE)):
        cost = cpu_ms(line + "\n1+1")
        print(f"sealed, {name} ({len(line):5,} chars)       {cost:6.3f} ms  (+{cost - clear:.3f} ms)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed round trips of each cell")
    parser.add_argument("--warden-arg", action="append", default=[],
                        help="extra option for the server, e.g. --Warden.sandbox=none")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="warden-sealed-") as tmp:
        work = Path(tmp)
        root = work / "root"
        (root / NB_FOLDER).mkdir(parents=True)
        (root / NB_PATH).write_text(json.dumps(NOTEBOOK).replace("{n}", "0"))
        state = work / "state"
        token = prepare_warden_state(state)
        placeholder = prepare_key(state)
        server = Server("warden", root, work, token,
                        [f"--Warden.state_dir={state}", NO_RATE_LIMIT, *args.warden_arg])
        try:
            server.wait_ready()
            kernel = Kernel(server, token)
            print(f"kernel on {NB_PATH}, options: {args.warden_arg or 'defaults'}")
            asyncio.run(measure(kernel, placeholder, args.runs))
        finally:
            server.stop()
    kernel_side()
    return 0


if __name__ == "__main__":
    sys.exit(main())
