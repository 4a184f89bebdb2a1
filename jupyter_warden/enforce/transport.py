"""Where local kernels listen, and who else on the host can reach them.

Stock Jupyter starts each kernel on plain loopback TCP: any local account
can read its IOPub stream. Here each kernel gets CurveZMQ (when libzmq and
its kernelspec support it) or Unix sockets in a private 0700 folder, and
its connection file is checked to be 0600 before the kernel reads it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import zmq

# c.Warden.kernel_transport values; "auto" is per kernel: curve, else ipc.
MODES = ("auto", "curve", "ipc", "tcp")

# A Unix socket path must fit sun_path (108 bytes on Linux, with its NUL).
_SUN_PATH_MAX = 107


class TransportError(RuntimeError):
    """A kernel transport that can't be made private; the kernel must not start."""


def curve_available() -> bool:
    return zmq.has("curve")


def supports_curve(kernel_spec) -> bool:
    """Whether a kernelspec declares CurveZMQ in ``metadata.supported_encryption``."""
    declared = ((kernel_spec and kernel_spec.metadata) or {}).get("supported_encryption")
    if isinstance(declared, str):
        declared = [declared]
    return isinstance(declared, (list, tuple)) and "curve" in [str(d).lower() for d in declared]


def check_private_dir(path: str | Path, what: str, fix: bool = False) -> bool:
    """Refuse a folder other accounts can enter; with ``fix``, tighten it to 0700 first.

    Returns whether it had to be tightened.
    """
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise TransportError(f"the {what} {path} is not a folder")
    if st.st_uid != os.geteuid():
        raise TransportError(
            f"the {what} {path} belongs to uid {st.st_uid}, not to the server's "
            f"uid {os.geteuid()}; give the server a folder of its own"
        )
    loose = bool(st.st_mode & 0o077)
    if loose and fix:
        os.chmod(path, 0o700)
    elif loose:
        raise TransportError(f"the {what} {path} has mode {oct(st.st_mode & 0o777)}, not 0700")
    return loose


def check_private_file(path: str | Path, what: str) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise TransportError(
            f"the {what} {path} is not a 0600 file of the server's own "
            f"(mode {oct(st.st_mode & 0o777)}, uid {st.st_uid}); the kernel was not started"
        )


class KernelTransport:
    """The chosen transport of one server, and its private socket folder."""

    def __init__(self, mode: str, log, iopub_queue: int = 10_000):
        if mode not in MODES:
            raise TransportError(f"kernel_transport must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "curve" and not curve_available():
            raise TransportError(
                "kernel_transport is 'curve' but this libzmq has no CurveZMQ; "
                "use 'ipc', or a pyzmq built with libsodium"
            )
        self.mode = mode
        self.log = log
        self.iopub_queue = iopub_queue
        self._socket_dir: str | None = None
        if mode == "tcp":
            log.warning(
                "jupyter-warden: kernel_transport is 'tcp': every local account can "
                "connect to kernel ports and read their output"
            )

    def choose(self, kernel_spec) -> str:
        """'curve' or 'ipc' (or 'tcp', only when configured) for one kernel."""
        if self.mode != "auto":
            return self.mode
        return "curve" if curve_available() and supports_curve(kernel_spec) else "ipc"

    def _deepen_iopub(self, km) -> None:
        """Let the server's IOPub sockets of this kernel hold ``iopub_queue`` messages.

        IOPub is publish/subscribe: ZMQ drops what doesn't fit, and at its
        stock 1,000 messages (and the small buffers of Unix sockets) a cell
        that prints fast lost lines, and sometimes the idle status that ends
        its busy state, whenever the server fell behind for a moment. Every
        IOPub socket the server opens (websockets, jupyter_server's activity
        watch) comes from ``connect_iopub``.
        """
        connect = km.connect_iopub
        queue = self.iopub_queue

        def connect_iopub(identity=None):
            stream = connect(identity=identity)  # a ZMQStream, on jupyter_server's managers
            # libzmq applies a new high-water mark to the pipe the connect made.
            getattr(stream, "socket", stream).rcvhwm = queue
            return stream

        km.connect_iopub = connect_iopub

    @property
    def socket_dir(self) -> str:
        """A 0700 folder of this server's, made on first use; short, for sun_path."""
        if self._socket_dir is None:
            # mkdtemp makes the folder 0700 atomically, so no one can swap it in.
            self._socket_dir = tempfile.mkdtemp(prefix="warden-ipc-")
        check_private_dir(self._socket_dir, "kernel socket folder")
        return self._socket_dir

    def apply(self, km, kernel_id: str) -> None:
        """Configure one kernel manager before its kernel starts."""
        # Connection files hold the kernel's keys; jupyter_server puts them in
        # its runtime folder, made private at start-up and checked again here.
        check_private_dir(os.path.dirname(km.connection_file), "kernel connection folder")
        kind = self.choose(km.kernel_spec)
        if kind == "curve":
            km.transport = "tcp"
            km.transport_encryption = "required"
        elif kind == "ipc":
            km.transport = "ipc"
            km.cache_ports = False
            km.ip = os.path.join(self.socket_dir, kernel_id)
            if len(f"{km.ip}-99999") > _SUN_PATH_MAX:
                raise TransportError(
                    f"kernel socket paths under {self.socket_dir} are too long for "
                    "Unix sockets; set TMPDIR to a shorter folder"
                )
        self._deepen_iopub(km)
        write = km.write_connection_file

        # Checked before the kernel process exists, so a file others could read
        # (JUPYTER_ALLOW_INSECURE_WRITES, an odd file system) never carries keys.
        def write_checked(**kwargs):
            write(**kwargs)
            check_private_file(km.connection_file, "kernel connection file")

        km.write_connection_file = write_checked

    def close(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


def secure_runtime_dir(path: str, log) -> None:
    """Make Jupyter's runtime folder (connection files, server info, cookie secret) 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if check_private_dir(path, "Jupyter runtime folder", fix=True):
        log.warning("jupyter-warden: the Jupyter runtime folder %s was open to others; now 0700", path)


def private_transport_kernel_manager(base: type, transport: KernelTransport) -> type:
    """A subclass of the configured multi-kernel manager that applies ``transport``."""

    class PrivateTransportKernelManager(base):
        def pre_start_kernel(self, kernel_name, kwargs):
            km, kernel_name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
            transport.apply(km, kernel_id)
            return km, kernel_name, kernel_id

    PrivateTransportKernelManager.__name__ = base.__name__
    PrivateTransportKernelManager.__qualname__ = base.__qualname__
    return PrivateTransportKernelManager
