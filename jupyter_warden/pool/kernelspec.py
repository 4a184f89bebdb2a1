"""Writes the Enterprise Gateway kernelspec that starts kernels on the pool hosts.

    python -m jupyter_warden.pool.kernelspec DEST --hosts-file FILE [--python PATH] [--key-file FILE]

DEST/NAME/kernel.json goes into EG's kernel folder (e.g.
/usr/local/share/jupyter/kernels). Its argv runs on the chosen host, over
SSH, as ``EG_REMOTE_USER`` (root): the host launcher (``pool/host.py``).
docs/pool.md walks an operator through it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROXY = "jupyter_warden.pool.gateway.WardenDistributedProcessProxy"


def kernelspec(*, python: str, hosts_file: str, key_file: str, name: str,
               display_name: str = "Python 3 (pool)") -> dict:
    return {
        "display_name": display_name,
        "language": "python",
        # A kernel in its own bubblewrap session can't be sent SIGINT from the gateway.
        "interrupt_mode": "message",
        "metadata": {"process_proxy": {"class_name": PROXY, "config": {"hosts_file": hosts_file}}},
        "argv": [python, "-m", "jupyter_warden.pool.host",
                 "--kernel-id", "{kernel_id}", "--response-address", "{response_address}",
                 "--public-key", "{public_key}", "--port-range", "{port_range}",
                 "--kernel-name", name, "--key-file", key_file],
    }


def write_kernelspec(dest: str | os.PathLike, name: str = "pool_python", **options) -> Path:
    folder = Path(dest) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kernel.json"
    tmp = path.with_name("kernel.json.tmp")
    tmp.write_text(json.dumps(kernelspec(name=name, **options), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_warden.pool.kernelspec",
                                     description="Write the Enterprise Gateway kernelspec for the warden's pool hosts.")
    parser.add_argument("dest", help="EG's kernel folder, e.g. /usr/local/share/jupyter/kernels")
    parser.add_argument("--name", default="pool_python")
    parser.add_argument("--display-name", default="Python 3 (pool)")
    parser.add_argument("--hosts-file", required=True,
                        help="the file of pool hosts on the gateway's machine, one a line, read at each launch")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter on the hosts, with jupyter-warden and ipykernel installed")
    parser.add_argument("--key-file", default="/etc/jupyter-warden/pool.key",
                        help="the shared launch key on the hosts")
    args = parser.parse_args(argv)
    path = write_kernelspec(args.dest, args.name, python=args.python, hosts_file=os.path.abspath(args.hosts_file),
                            key_file=args.key_file, display_name=args.display_name)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
