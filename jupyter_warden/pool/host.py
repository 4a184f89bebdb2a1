"""The kernel launcher on a pool host: Enterprise Gateway runs it over SSH, as root.

It starts one kernel the way the warden server starts a local one: in
bubblewrap, under the uid the warden gave its user, with no network, a
private /tmp and home, the rlimits of the signed launch request
(``launch_token``), and the ``ipc`` transport in a 0700 folder of that uid.
The gateway reaches the kernel through TCP ports this launcher binds and
forwards to those sockets (sandboxed kernels can't reach them: no network),
and gets them in EG's own launcher protocol (an RSA/AES-encrypted reply to
its response address). EG's signals and shutdown arrive on a comm port.
A request that does not verify starts nothing. docs/pool.md says how to install it.

    python -m jupyter_warden.pool.host --kernel-id {kernel_id} \\
        --response-address {response_address} --public-key {public_key} [--port-range {port_range}]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from .launch_token import ENV_TOKEN, BadLaunchToken, load_key, verify

DEFAULT_KEY_FILE = "/etc/jupyter-warden/pool.key"
DEFAULT_RUN_BASE = "/run/jupyter-warden-pool"
SYSTEM_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"]
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
# Every backend socket takes this routing id: the kernel answers stdin on the
# routing prefix of the shell request, so shell and stdin must look like one peer.
_PEER = b"jupyter-warden-pool"

log = logging.getLogger("jupyter_warden.pool.host")


class LaunchRefused(Exception):
    pass


def _own_address(response_address: str) -> str:
    """The address of this host on the way to the gateway: where the gateway reaches the kernel."""
    host, _, port = response_address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port)))
        return probe.getsockname()[0]


def _port_range(text: str | None) -> tuple[int, int]:
    try:
        low, high = (int(p) for p in (text or "0..0").split(".."))
    except ValueError:
        return 0, 0
    return (low, high) if 0 < low < high else (0, 0)


def encrypt_reply(conn_info: dict, public_key: str) -> bytes:
    """EG's version-1 launcher reply: the AES key under EG's RSA key, the info under AES (EG's choice of modes)."""
    from cryptography.hazmat.primitives import padding, serialization
    from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    pem = f"-----BEGIN PUBLIC KEY-----\n{public_key}\n-----END PUBLIC KEY-----\n".encode()
    rsa_key = serialization.load_pem_public_key(pem)
    aes_key = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(json.dumps(conn_info).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()  # noqa: S305 (EG's protocol)
    sealed = encryptor.update(data) + encryptor.finalize()
    payload = {"version": 1, "key": base64.b64encode(rsa_key.encrypt(aes_key, rsa_padding.PKCS1v15())).decode(),
               "conn_info": base64.b64encode(sealed).decode()}
    return base64.b64encode(json.dumps(payload).encode())


class PoolKernel:
    """One sandboxed kernel, its TCP forwarders and its comm port."""

    def __init__(self, args, claims: dict):
        self.args, self.claims = args, claims
        self.kernel_id = args.kernel_id
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.run_dir = Path(args.run_base) / self.kernel_id

    # -- the sandbox --------------------------------------------------------

    def plan(self):
        from ..sandbox.launch import KERNEL_HOME, PACKAGE, CLIENT_SITE, Launch, Limits, Mounts, interpreter_trees

        claims = self.claims
        uid, gid = claims["uid"], claims["gid"]
        base = Path(self.args.run_base)
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        # Left by an earlier incarnation of this kernel (killed, then restarted here): not reused.
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(mode=0o700)
        os.chown(self.run_dir, uid, gid)
        hidden = [base.resolve(), Path(self.args.key_file).resolve().parent]
        mounts = Mounts(hidden)
        mounts.tmpfs(Path("/tmp"), "1777")
        mounts.tmpfs(Path(KERNEL_HOME), "1777")
        for path in map(Path, self.args.system_path):
            if path.is_symlink():
                mounts.symlink(os.readlink(path), path)
            elif path.is_dir():
                mounts.bind(path, writable=False)
        for tree in interpreter_trees(self.python):
            if not any(b == tree or b in tree.parents for b in mounts.bound):
                mounts.bind(tree, writable=False)
        mounts.args += ["--proc", "/proc", "--dev", "/dev"]
        mounts.bind_to(PACKAGE, Path(CLIENT_SITE) / PACKAGE.name)
        mounts.bind(self.run_dir.resolve(), writable=True)
        limits = Limits(**{k: int(claims["limits"].get(k, 0)) for k in
                           ("memory_bytes", "cpu_seconds", "processes", "file_bytes", "open_files")})
        return Launch(subject=claims["subject"], user=claims["user"], uid=uid, gid=gid, folder="",
                      writable=True, network=bool(claims.get("network")), limits=limits,
                      mounts=mounts.args, chdir=KERNEL_HOME, run_dir=self.run_dir)

    @property
    def python(self) -> str:
        return os.path.abspath(self.args.python or sys.executable)

    def start(self) -> dict:
        """Start the kernel and its forwarders; the connection info for the gateway."""
        import zmq
        from jupyter_client.connect import write_connection_file

        launch = self.plan()
        connection_file = str(self.run_dir / "connection.json")
        # The key that signs every message between the gateway and the kernel (jupyter_client's
        # default is none: unsigned messages would be accepted from anyone reaching the ports).
        _, info = write_connection_file(connection_file, transport="ipc", ip=str(self.run_dir / "ipc"),
                                        key=secrets.token_hex(32).encode(), kernel_name=self.args.kernel_name)
        os.chown(connection_file, launch.uid, launch.gid)
        env = launch.env({k: v for k, v in os.environ.items()}, {},
                         os.pathsep.join(dict.fromkeys([os.path.dirname(self.python), "/usr/local/bin",
                                                        "/usr/bin", "/bin"])))
        env["KERNEL_ID"] = self.kernel_id
        cmd = launch.argv([self.python, "-m", "ipykernel_launcher", "-f", connection_file])
        log.info("kernel %s for %s (uid %d): %s", self.kernel_id, launch.user, launch.uid, cmd)
        self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=lambda: os.umask(0o077))

        self.context = zmq.Context()
        address = self.args.ip or _own_address(self.args.response_address)
        low, high = _port_range(self.args.port_range)
        ports = {}
        for channel in CHANNELS:
            if channel == "iopub":
                front, back = self.context.socket(zmq.XPUB), self.context.socket(zmq.XSUB)
            else:
                front, back = self.context.socket(zmq.ROUTER), self.context.socket(zmq.DEALER)
                back.setsockopt(zmq.ROUTING_ID, _PEER)
            front.setsockopt(zmq.LINGER, 0)
            back.setsockopt(zmq.LINGER, 0)
            if low:
                ports[channel] = front.bind_to_random_port(f"tcp://{address}", low, high)
            else:
                ports[channel] = front.bind_to_random_port(f"tcp://{address}")
            back.connect(f"ipc://{info['ip']}-{info[channel + '_port']}")
            threading.Thread(target=self._forward, args=(front, back), daemon=True,
                             name=f"forward-{channel}").start()

        self.comm = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.comm.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.comm.bind((address, 0))
        self.comm.listen(16)
        threading.Thread(target=self._listen, daemon=True, name="comm").start()
        return {**{f"{c}_port": p for c, p in ports.items()}, "ip": address, "transport": "tcp",
                "key": info["key"].decode() if isinstance(info["key"], bytes) else info["key"],
                "signature_scheme": info["signature_scheme"], "kernel_name": self.args.kernel_name,
                "kernel_id": self.kernel_id, "pid": os.getpid(), "comm_port": self.comm.getsockname()[1]}

    @staticmethod
    def _forward(front, back) -> None:
        import zmq

        try:
            zmq.proxy(front, back)
        except zmq.ContextTerminated:
            pass
        finally:
            front.close(0)
            back.close(0)

    # -- the gateway's requests ---------------------------------------------

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.comm.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while len(data) < 4096:
                        chunk = conn.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    request = json.loads(data) if data else {}
                except (OSError, ValueError):
                    continue
            self._handle(request if isinstance(request, dict) else {})

    def _handle(self, request: dict) -> None:
        if request.get("shutdown"):
            log.info("kernel %s: shutdown requested by the gateway", self.kernel_id)
            self.stop()
            return
        signum = request.get("signum")
        if isinstance(signum, int) and signum > 0 and self.process is not None:
            # SIGINT can't reach a kernel in its own session: the kernelspec asks for
            # message interrupts. Any other signal ends the sandbox.
            if signum != signal.SIGINT:
                self.stop()

    def stop(self) -> None:
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()

    def cleanup(self) -> None:
        try:
            self.comm.close()
        except Exception:
            pass
        ctx = getattr(self, "context", None)
        if ctx is not None:
            ctx.destroy(0)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def wait(self) -> int:
        max_age = float(self.claims.get("max_age") or 0)
        # The warden server stops kernels at their max age; this is the backstop
        # for a server that can't (gone, or cut off from the gateway).
        timer = threading.Timer(max_age + 300, self.stop) if max_age > 0 else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        code = self.process.wait()
        if timer is not None:
            timer.cancel()
        return code


def _send(response_address: str, payload: bytes) -> None:
    host, _, port = response_address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(payload)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jupyter_warden.pool.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel-id", "--RemoteProcessProxy.kernel-id", required=True)
    parser.add_argument("--response-address", "--RemoteProcessProxy.response-address", required=True)
    parser.add_argument("--public-key", "--RemoteProcessProxy.public-key", required=True)
    parser.add_argument("--port-range", "--RemoteProcessProxy.port-range", default=None)
    parser.add_argument("--kernel-name", default="")
    parser.add_argument("--key-file", default=os.environ.get("WARDEN_POOL_KEY_FILE", DEFAULT_KEY_FILE),
                        help="the key shared with the warden server (hex, 0600)")
    parser.add_argument("--run-base", default=DEFAULT_RUN_BASE, help="where kernels' socket folders are made")
    parser.add_argument("--python", default=None, help="the kernel's interpreter (default: this one)")
    parser.add_argument("--ip", default=None, help="the address the gateway reaches this host on "
                        "(default: the one on the way to the response address)")
    parser.add_argument("--system-path", action="append", default=None,
                        help="a host folder bound read-only into the sandbox (repeat); default: "
                        + " ".join(SYSTEM_PATHS))
    args = parser.parse_args(argv)
    if args.system_path is None:
        args.system_path = SYSTEM_PATHS
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s jupyter-warden pool host: %(message)s")
    args = parse_args(argv)
    if os.geteuid() != 0:
        log.error("refused: the pool launcher must run as root (it starts kernels under other uids)")
        return 2
    try:
        key = load_key(args.key_file)
        claims = verify(key, os.environ.get(ENV_TOKEN, ""), args.kernel_id)
        named = os.environ.get("KERNEL_USERNAME")
        if named is not None and named != claims.get("username", named):
            raise BadLaunchToken(f"KERNEL_USERNAME {named!r} is not the signed user")
    except (OSError, ValueError, BadLaunchToken) as e:
        log.error("refused to start kernel %s: %s", args.kernel_id, e)
        return 2
    kernel = PoolKernel(args, claims)
    signal.signal(signal.SIGTERM, lambda *_: kernel.stop())
    try:
        info = kernel.start()
        _send(args.response_address, encrypt_reply(info, args.public_key))
        code = kernel.wait()
        log.info("kernel %s of %s ended with status %s", args.kernel_id, claims["user"], code)
        return 0
    finally:
        kernel.stop()
        kernel.cleanup()


if __name__ == "__main__":
    sys.exit(main())
