"""The Jupyter Server extension: configuration, and wiring into jupyter_server.

``Warden`` is an ExtensionApp. Linking it (which happens before the server
builds its configurables) installs the warden's identity provider and the
contents manager that hides the state folder; loading it opens the store.
Every option is a traitlet here, documented by its ``help``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, List, Unicode, default, validate

from .audit.log import AuditLog, load_or_create_key
from .master_key import ENV_COMMAND, MasterKeyError, load_master_key
from .identity.accounts import Accounts
from .policy import PolicyEngine
from .policy.changes import Policy
from .identity.throttle import SignInThrottle
from .store import Store, StoreError, default_db_url, default_state_dir, ensure_state_dir
from .enforce.authorizer import GuardedIdentityProvider, WardenAuthorizer, guarded_hub_identity_provider
from .enforce.contents import hiding_contents_manager
from .enforce.events import ACCESS_SCHEMA, HEARTBEAT, AccessNotices, install_events_socket
from .enforce.kernel_channels import GuardedGatewayConnection, GuardedZMQChannelsConnection, KernelConnections
from .enforce.kernel_shares import KernelShares
from .enforce.sessions import owning_kernel_manager, owning_session_manager
from .enforce.transport import MODES as KERNEL_TRANSPORTS
from .enforce.transport import KernelTransport, private_transport_kernel_manager, secure_runtime_dir
from .handlers import warden_handlers
from .secrets.channel import VaultChannels
from .secrets.vault import Vault
from .sealed import KeyRing
from .sealed.execution import SealedRuns
from . import sandbox as sandboxing
from .sandbox.notices import KernelEnds
from .sandbox.watch import AccessWatch


class Warden(ExtensionApp):
    """jupyter-warden: access levels, sealed cells, sandboxed kernels, a vault and an audit log."""

    name = "jupyter_warden"
    description = __doc__
    load_other_extensions = True

    state_dir = Unicode(
        help="""Folder for the warden's state: database, key ring and logs.
        Created with mode 0700. Never reachable through the contents API, even
        under the served root. Default: $WARDEN_STATE, else
        ~/.local/share/jupyter-warden.""",
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self):
        return default_state_dir()

    master_key_command = List(
        Unicode(),
        help="""A command (argv list) whose standard output is the master key, 32
        bytes in hex or base64: the hook for an external KMS. The key ring and
        the vault are encrypted under the master key. $WARDEN_MASTER_KEY, if
        set, comes first. Default: $WARDEN_MASTER_KEY_COMMAND (split like a
        shell would), else none, and the key lives in STATE_DIR/master.key
        (0600, made on first start). Losing the key loses every sealed cell
        and secret.""",
    ).tag(config=True)

    @default("master_key_command")
    def _default_master_key_command(self):
        import shlex

        return shlex.split(os.environ.get(ENV_COMMAND, ""))

    db_url = Unicode(
        help="""SQLAlchemy URL of the policy store, e.g.
        postgresql://warden@db/warden. Default: $WARDEN_DB, else SQLite
        (WAL mode) at STATE_DIR/warden.db.""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return os.environ.get("WARDEN_DB") or default_db_url(self.state_dir)

    identity = Enum(
        ["accounts", "proxy", "jupyterhub"],
        default_value="accounts",
        help="""Where users come from. 'accounts': the warden's own accounts, with
        the sign-in page and API tokens. 'proxy': a trusted reverse proxy names
        the user in `proxy_header`. 'jupyterhub': the server was started by
        JupyterHub (jupyterhub-singleuser, as a user's server or a hub service),
        and the hub's OAuth names the user, their groups and admin flag
        (docs/jupyterhub.md).""",
    ).tag(config=True)

    hub_admins_are_admins = Bool(
        False,
        help="""In 'jupyterhub' identity mode, make the hub's admins admins of this
        server too. Off by default: a hub admin gets only what the warden grants.""",
    ).tag(config=True)

    hub_admin_users = List(
        Unicode(),
        default_value=[],
        help="""In 'jupyterhub' identity mode, the hub users who are admins of this
        server, e.g. the instructor of a course server. In this mode the admin
        flag is configuration: it is set from this list (and
        hub_admins_are_admins) at each request, whatever the CLI set.""",
    ).tag(config=True)

    hub_cache_max_age = Int(
        60,
        help="""In 'jupyterhub' identity mode, how long (seconds) the hub's answer
        about a user (their groups, admin flag, whether they may reach this
        server) is reused before the hub is asked again: a change in the hub
        takes effect here within this time. Sets HubOAuth.cache_max_age
        (JupyterHub's default is 300) unless that is configured itself.""",
    ).tag(config=True)

    proxy_header = Unicode(
        "X-Forwarded-User",
        help="In 'proxy' identity mode, the request header that names the user.",
    ).tag(config=True)

    trusted_proxies = List(
        Unicode(),
        default_value=["127.0.0.1/32", "::1/128"],
        help="""In 'proxy' identity mode, the addresses or networks (CIDR) the
        proxy connects from. A request from anywhere else is refused, and its
        header ignored.""",
    ).tag(config=True)

    @validate("trusted_proxies")
    def _valid_networks(self, proposal):
        for value in proposal["value"]:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as e:
                raise ValueError(f"Warden.trusted_proxies: {e}") from None
        return proposal["value"]

    proxy_create_users = Bool(
        True,
        help="""In 'proxy' identity mode, create an account (without a password)
        the first time the proxy names an unknown user. If False, unknown users
        are refused.""",
    ).tag(config=True)

    session_lifetime_hours = Float(
        24 * 7,
        help="How long a browser sign-in lasts, in hours, before the user signs in again.",
    ).tag(config=True)

    cookie_samesite = Enum(
        ["Lax", "Strict"],
        default_value="Lax",
        help="The SameSite attribute of the sign-in cookie.",
    ).tag(config=True)

    secure_cookie = Bool(
        None,
        allow_none=True,
        help="""Mark the sign-in cookie Secure (HTTPS only). Default (None): when
        the request came over HTTPS, which includes a TLS-terminating proxy when
        ServerApp.trust_xheaders is set.""",
    ).tag(config=True)

    signin_free_attempts = Int(
        5,
        help="Failed sign-ins allowed per user name and per address before each try must wait.",
    ).tag(config=True)

    signin_base_delay = Float(
        1.0,
        help="Seconds of the first wait after the free attempts; each further failure doubles it.",
    ).tag(config=True)

    signin_max_delay = Float(
        300.0,
        help="The longest wait, in seconds, between sign-in attempts.",
    ).tag(config=True)

    policy_poll_interval = Float(
        0.25,
        help="""Seconds between checks of the store's policy version. A change made
        by the CLI or another server process reaches this one within this time
        (a change made here, at once).""",
    ).tag(config=True)

    signed_in_resources = List(
        Unicode(),
        default_value=[],
        help="""jupyter_server authorization resources (e.g. 'lsp', or 'lsp:read' for
        one action) that any signed-in user may use. Every resource the warden
        does not know is otherwise for server admins only. Default: none.""",
    ).tag(config=True)

    signed_in_handlers = List(
        Unicode(),
        default_value=[],
        help="""Dotted class names of request handlers without jupyter_server's
        @authorized (another extension's pages or APIs) that any signed-in
        user may reach. Every such handler the warden does not know is
        otherwise for server admins only. Default: none.""",
    ).tag(config=True)

    terminals_for_everyone = Bool(
        False,
        help="""Let every signed-in user open terminals. A terminal runs as the
        server's own account and can read every file and the warden's state:
        only for servers whose users are all trusted. Default: admins only.""",
    ).tag(config=True)

    audit_code = Bool(
        False,
        help="""Put the text of every executed cell into its `kernel.execute` audit
        record. Off by default: the record then holds only the code's sha256.
        The code can hold secrets typed by users.""",
    ).tag(config=True)

    kernel_max_message_bytes = Int(
        4 * 1024 * 1024,
        help="""The largest output message (IOPub) a kernel websocket passes to the
        browser, in bytes. A bigger one is replaced by a short notice saying it was cut.""",
    ).tag(config=True)

    kernel_max_output_bytes = Int(
        64 * 1024 * 1024,
        help="""The most output (IOPub bytes) one execution may send to one kernel
        websocket. Past it, the rest of that execution's output is replaced by one
        notice; its status and reply still arrive.""",
    ).tag(config=True)

    kernel_max_send_buffer_bytes = Int(
        16 * 1024 * 1024,
        help="""How much may wait in the server to be sent to one kernel websocket
        whose client is slow or not reading, in bytes. Past it, output (IOPub) is
        dropped and the client is told how much once it catches up; status
        messages and replies still queue, up to twice this, and past that the
        connection is closed (1008) and audited.""",
    ).tag(config=True)

    kernel_iopub_queue = Int(
        10_000,
        help="""How many output (IOPub) messages of a local kernel the server's
        ZMQ socket holds while the server is busy (ZMQ's high-water mark; 0 for
        no limit). Messages past it are dropped by ZMQ, silently, status
        messages included. Stock ZMQ holds 1,000, which the small buffers of the
        ipc transport made lossy: a cell printing fast lost lines, and
        sometimes the idle status that ends its busy state. The memory this can
        take is this many times the size of the kernel's messages.""",
    ).tag(config=True)

    kernel_max_incoming_bytes = Int(
        10 * 1024 * 1024,
        help="""The largest message a client may send on a kernel websocket, in
        bytes; a bigger one is dropped and audited.""",
    ).tag(config=True)

    kernel_message_rate = Float(
        100.0,
        help="""Messages per second a client may send on one kernel websocket, on
        average (a token bucket). Excess messages are refused, with an error reply
        and an audit record.""",
    ).tag(config=True)

    kernel_message_burst = Int(
        1000,
        help="""How many messages a client may send on one kernel websocket at
        once, above the rate (e.g. 'Run all' on a long notebook).""",
    ).tag(config=True)

    kernel_recheck_interval = Float(
        0.25,
        help="""Seconds between re-checks of every open kernel websocket. A user who
        lost run on the notebook, or a kernel share, is disconnected within about
        this time plus the policy poll interval. Sandboxed kernels are re-checked
        as often: one whose user lost read (or write) on a path mounted in it, or
        run on its notebook, is shut down.""",
    ).tag(config=True)

    kernel_identity_recheck_interval = Float(
        0.75,
        help="""Seconds between re-checks, on each open kernel websocket, that its
        sign-in (token, browser session or account) is still valid.""",
    ).tag(config=True)

    document_recheck_interval = Float(
        0.25,
        help="""Seconds between re-checks of every open collaboration (document)
        websocket. A user who lost read is disconnected, and one who lost or
        gained write turns read-only or read-write, within about this time plus
        the policy poll interval.""",
    ).tag(config=True)

    document_max_message_bytes = Int(
        16 * 1024 * 1024,
        help="""The largest message a client may send on a collaboration (document)
        websocket, in bytes; 0 for no limit (stock: 1 GB). A bigger one is dropped,
        audited, and answered with a 'warden:refused' notice; a writer's change
        that big, or a third message that big, closes the connection (1009). A
        frame over 4 times the limit is not even read: the connection is closed.""",
    ).tag(config=True)

    document_nodelay = Bool(
        True,
        help="""Set TCP_NODELAY on collaboration (document) websockets, so that small
        Y updates and awareness messages are sent at once instead of waiting on
        Nagle's algorithm (stock leaves it on). docs/benchmarks.md has the numbers.""",
    ).tag(config=True)

    kernel_transport = Enum(
        list(KERNEL_TRANSPORTS),
        default_value="auto",
        help="""How the server talks to local kernels, so that other accounts on
        the host can't. 'curve': loopback TCP with CurveZMQ (kernels whose
        kernelspec does not declare it fail to start). 'ipc': Unix sockets in a
        0700 folder of the server's. 'auto': 'curve' for kernels that support
        it, else 'ipc'. 'tcp': stock Jupyter, plain loopback TCP that any local
        account can reach; only for single-user hosts.""",
    ).tag(config=True)

    # -- sandboxed kernels (docs/security.md, "Sandbox") -----------------------

    sandbox = Enum(
        ["bubblewrap", "none"],
        help="""How kernels are isolated. 'bubblewrap': every kernel runs in bubblewrap
        under its user's own uid, seeing only system folders, its notebook's folder
        (read-only where its user may only read), a private /tmp and home, with no
        network and the limits below; needs root and /usr/bin/bwrap. 'none': kernels
        run as the server's account and can read everything it can, the warden's
        database and key ring included (guarantees G4 and G5 do not hold): only for
        a single-user laptop. Default: 'bubblewrap' wherever it runs, else 'none'
        with a loud warning.""",
    ).tag(config=True)

    @default("sandbox")
    def _default_sandbox(self):
        problem = sandboxing.bubblewrap_problem()
        if problem is None:
            return "bubblewrap"
        self._sandbox_problem = problem
        return "none"

    sandbox_uid_range = List(
        Int(),
        default_value=[200000, 299999],
        help="""[first, last]: the host uids given to kernel users, one per user (or
        share link), allocated once and kept in the store. Choose a range no host
        account and no other server uses.""",
    ).tag(config=True)

    @validate("sandbox_uid_range")
    def _valid_uid_range(self, proposal):
        value = proposal["value"]
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            raise ValueError("Warden.sandbox_uid_range must be [first, last] with 0 < first <= last")
        return value

    sandbox_gid = Int(
        199999,
        help="""The group every sandboxed kernel runs in. The files of a folder bound
        into a sandbox are given to this group (read, and write where the user may
        write), so kernel uids pass the file modes. No host account should be in it.""",
    ).tag(config=True)

    sandbox_system_paths = List(
        Unicode(),
        default_value=["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"],
        help="""Host folders bound read-only into every sandbox (those that exist).
        The kernel's Python (its environment and base interpreter) is added to them.
        The warden's state folder and Jupyter's config folders are hidden even when
        below one of them.""",
    ).tag(config=True)

    sandbox_network = List(
        Unicode(),
        default_value=[],
        help="""Who may reach the network from their kernels: 'user:NAME', 'group:NAME'
        or 'authenticated' (every user). Everyone else's kernels have no network at all.""",
    ).tag(config=True)

    workspace_dir = Unicode(
        "users/{user}",
        help="""Each user's own workspace: a folder under the served root ('{user}' is
        their user name) bound into every kernel of theirs, wherever its notebook
        is, at the same path and at their rights there (read-write where they may
        write, read-only where they may only read; paths they may not read hidden).
        Only if the folder exists and they may read it; the warden creates no folder
        and gives no right. Its path is in $WARDEN_WORKSPACE. '' for none.""",
    ).tag(config=True)

    sandbox_max_entries = Int(
        20000,
        help="""The most files and folders a kernel's folder may hold: each is checked
        against the policy at kernel start. A bigger folder refuses to start kernels.""",
    ).tag(config=True)

    kernel_memory_limit = Int(
        4 * 1024**3,
        help="""Memory of a kernel, in bytes; 0 for none. Always the address space of
        each kernel process (RLIMIT_AS). With kernel cgroups (kernel_cgroups) also
        the memory of the kernel and all its processes together (memory.max, or
        memory.limit_in_bytes on cgroup v1): past it the host's OOM killer
        kills the kernel, and its user is told it was this limit.""",
    ).tag(config=True)

    kernel_cgroups = Enum(
        ["auto", "v2", "v1", "none"],
        default_value="auto",
        help="""Give each sandboxed kernel a cgroup of its own, capping the memory
        (kernel_memory_limit) and the processes (kernel_cgroup_pids_limit) of all
        its processes together, on top of the rlimits. 'v2': the unified
        hierarchy, below the server's own cgroup (which must be delegated to
        the server, with the memory and pids controllers). 'v1': the memory and
        pids v1 hierarchies (/sys/fs/cgroup/memory and /sys/fs/cgroup/pids),
        in a folder jupyter-warden-PID at their top. 'auto': v2 where its memory
        and pids controllers can be used, else v1 where both hierarchies are
        writable, else none (logged at start). An explicit 'v2' or 'v1' that
        the host can't give stops the server. 'none': rlimits only.""",
    ).tag(config=True)

    kernel_cgroup_pids_limit = Int(
        512,
        help="""Processes and threads of one kernel together (its cgroup's pids.max),
        when kernels have cgroups (kernel_cgroups); 0 for none. A fork or thread
        past it is refused, and the user told which limit refused it.""",
    ).tag(config=True)

    @validate("kernel_memory_limit", "kernel_cgroup_pids_limit", "kernel_cpu_limit", "kernel_process_limit",
              "kernel_file_size_limit", "kernel_open_files_limit")
    def _valid_limit(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(f"Warden.{proposal['trait'].name} must be 0 (no limit) or more")
        return proposal["value"]

    kernel_cpu_limit = Int(
        8 * 3600,
        help="CPU seconds each kernel process may use (RLIMIT_CPU); past it, it is killed. 0 for none.",
    ).tag(config=True)

    kernel_process_limit = Int(
        512,
        help="""Processes and threads of one user's kernels, together, on the host
        (RLIMIT_NPROC of the user's uid); 0 for none.""",
    ).tag(config=True)

    kernel_file_size_limit = Int(
        8 * 1024**3,
        help="The largest file a kernel may write, in bytes (RLIMIT_FSIZE); 0 for none.",
    ).tag(config=True)

    kernel_open_files_limit = Int(
        1024,
        help="Files each kernel process may hold open (RLIMIT_NOFILE); 0 for none.",
    ).tag(config=True)

    kernel_idle_timeout = Float(
        4 * 3600,
        help="""Seconds a kernel may stay idle before it is shut down (sets
        MappingKernelManager.cull_idle_timeout unless that is set); 0 for never. A
        sandboxed kernel culled so is audited as kernel.exit with cause idle, and
        its clients are told why.""",
    ).tag(config=True)

    kernel_max_age = Float(
        24 * 3600,
        help="""Seconds a sandboxed kernel may live, busy or not, before it is shut down
        (audited as kernel.exit with cause max-age); 0 for no limit.""",
    ).tag(config=True)

    # -- kernels on a pool of hosts, through Enterprise Gateway (docs/pool.md) --

    pool_key_file = Unicode(
        help="""With --gateway-url (kernels on an Enterprise Gateway's pool of hosts):
        the file of the key (64 hex digits, mode 0600) that signs each kernel's
        launch request (its user, uid and limits). The same key must be on every
        pool host (/etc/jupyter-warden/pool.key there). Made on first start.
        Default: STATE_DIR/pool.key.""",
    ).tag(config=True)

    @default("pool_key_file")
    def _default_pool_key_file(self):
        return str(Path(self.state_dir).expanduser() / "pool.key")

    # -- derived ------------------------------------------------------------

    @property
    def session_lifetime(self) -> dt.timedelta:
        return dt.timedelta(hours=self.session_lifetime_hours)

    @property
    def session_lifetime_days(self) -> float:
        return self.session_lifetime_hours / 24

    @property
    def trusted_networks(self):
        return [ipaddress.ip_network(v, strict=False) for v in self.trusted_proxies]

    # -- wiring -------------------------------------------------------------

    def _link_jupyter_server_extension(self, serverapp):
        # jupyter_server logs a failing extension and carries on without it:
        # for the warden that would mean a server with no access control.
        try:
            super()._link_jupyter_server_extension(serverapp)
            self._install_enforcement(serverapp)
        except SystemExit:
            raise
        except Exception as e:
            self._refuse(f"its configuration is not valid: {e}")

    def _install_enforcement(self, serverapp):
        state = Path(self.state_dir).expanduser().resolve()
        root = Path(serverapp.root_dir).expanduser().resolve()
        if root == state or state in root.parents:
            self._refuse(
                f"the served root {root} lies inside the warden state folder {state}; "
                "choose a state folder outside the root (--state or WARDEN_STATE)"
            )
        if self.identity == "jupyterhub":
            self._install_hub_identity(serverapp)
        else:
            serverapp.identity_provider_class = GuardedIdentityProvider
        serverapp.authorizer_class = WardenAuthorizer
        base = serverapp.contents_manager_class
        if not hasattr(base, "_get_os_path"):
            # Paths, symlinks and listings are checked against the disk.
            self._refuse(
                f"contents manager {base.__name__} is not file-backed; the warden "
                "enforces its rules only over a FileContentsManager (or a subclass)"
            )
        serverapp.contents_manager_class = hiding_contents_manager(base, [str(state)])
        # The manager defaults depend on the gateway settings, read only later by
        # init_configurables; the singleton it will use is made here instead.
        if not hasattr(serverapp, "gateway_config"):
            from jupyter_server.gateway.gateway_client import GatewayClient

            serverapp.gateway_config = GatewayClient.instance(parent=serverapp)
        serverapp.kernel_manager_class = owning_kernel_manager(serverapp.kernel_manager_class)
        if serverapp.gateway_config.gateway_enabled:
            serverapp.kernel_websocket_connection_class = GuardedGatewayConnection
        else:
            serverapp.kernel_websocket_connection_class = GuardedZMQChannelsConnection
        serverapp.session_manager_class = owning_session_manager(serverapp.session_manager_class)
        self._install_kernel_transport(serverapp)
        self._install_sandbox(serverapp)

    def _install_hub_identity(self, serverapp):
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            self._refuse(
                "c.Warden.identity is 'jupyterhub' but this server was not started by JupyterHub "
                "(no $JUPYTERHUB_API_TOKEN); start it with jupyterhub-singleuser from the hub "
                "(docs/jupyterhub.md)"
            )
        try:
            provider = guarded_hub_identity_provider()
        except ImportError as e:
            self._refuse(f"c.Warden.identity is 'jupyterhub' but JupyterHub can't be imported ({e}); "
                         "pip install 'jupyter-warden[jupyterhub]'")
        serverapp.identity_provider_class = provider

        # JupyterHub's single-user extension links after this one (extensions
        # link in name order) and installs its own provider, which would let
        # everyone the hub lets in do everything: ours stays.
        def keep_ours(change):
            if not (isinstance(change.new, type) and issubclass(change.new, provider)):
                self.log.debug("jupyter-warden: keeping its own identity provider over %s", change.new)
                serverapp.identity_provider_class = provider

        serverapp.observe(keep_ours, "identity_provider_class")
        if "cache_max_age" not in serverapp.config.HubOAuth:
            serverapp.config.HubOAuth.cache_max_age = self.hub_cache_max_age

    def _install_kernel_transport(self, serverapp):
        secure_runtime_dir(serverapp.runtime_dir, self.log)
        self.transport = KernelTransport(self.kernel_transport, self.log, self.kernel_iopub_queue)
        serverapp.kernel_manager_class = private_transport_kernel_manager(
            serverapp.kernel_manager_class, self.transport
        )

    def _install_sandbox(self, serverapp):
        if serverapp.gateway_config.gateway_enabled:
            sandboxing.uninstall_factory()  # no local kernels: the pool hosts sandbox them
            return
        if self.sandbox == "none":
            sandboxing.uninstall_factory()
            return
        problem = sandboxing.bubblewrap_problem()
        if problem is not None:
            self._refuse(f"c.Warden.sandbox is 'bubblewrap' but {problem}")
        sandboxing.install_factory(serverapp)
        # The idle culler's shutdowns are told apart from the user's, to explain them.
        serverapp.kernel_manager_class = sandboxing.culling_kernel_manager(serverapp.kernel_manager_class)

    def initialize_settings(self):
        try:
            ensure_state_dir(self.state_dir)
            self.store = Store(self.db_url)
            self.store.upgrade()
        except (StoreError, OSError) as e:
            self._refuse(str(e))
        except Exception as e:
            self._refuse(f"the state store can't be opened: {e}")
        self.accounts = Accounts(self.store)
        self.engine = PolicyEngine(self.store, poll_interval=self.policy_poll_interval)
        self.policy = Policy(self.store, on_change=self.engine.invalidate)
        if self.identity == "jupyterhub":
            self._check_hub_identity()
            # Hub users and groups get accounts when they first arrive; a grant
            # may name them before that.
            self.policy.create_missing_subjects = True
        self.audit = AuditLog(self.store, load_or_create_key(self.state_dir))
        try:
            self.master_key = load_master_key(self.state_dir, self.master_key_command)
        except (MasterKeyError, OSError) as e:
            self._refuse(str(e))
        self.vault = Vault(self.store, self.master_key, self.policy)
        self.vault_channels = VaultChannels(self)
        self.key_ring = KeyRing(self.store, self.master_key)
        self.sealed_runs = SealedRuns(self.key_ring)
        self.throttle = SignInThrottle(
            free_attempts=self.signin_free_attempts,
            base_delay=self.signin_base_delay,
            max_delay=self.signin_max_delay,
        )
        self.kernel_shares = KernelShares(self.serverapp.kernel_manager)
        self.serverapp.kernel_manager.warden_shares = self.kernel_shares
        self.kernel_connections = KernelConnections(self.kernel_recheck_interval)
        self.kernel_shares.on_revoke.append(self.kernel_connections.recheck)
        # The same registry and timer, for collaboration websockets (enforce/rtc.py).
        self.document_connections = KernelConnections(self.document_recheck_interval)
        # Who wrote to each document's room (policy subjects): what its saves are masked for.
        self.document_writers: dict[str, set[str]] = {}
        self.kernel_ends = KernelEnds()
        # Pages follow access changes through the event bus (enforce/events.py).
        self.serverapp.event_logger.register_event_schema(ACCESS_SCHEMA)
        self.access_notices = AccessNotices(self, self.policy_poll_interval, HEARTBEAT)
        self._start_sandbox()
        self.settings["warden"] = self
        self.log.info(
            "jupyter-warden: state in %s, store %s, identity mode %r",
            self.state_dir,
            self.store.display_url,
            self.identity,
        )

    def _check_hub_identity(self):
        provider = self.serverapp.identity_provider
        if not isinstance(provider, guarded_hub_identity_provider()):
            self._refuse(f"c.Warden.identity is 'jupyterhub' but the server's identity provider is "
                         f"{type(provider).__name__}, not the warden's")

    def _start_sandbox(self):
        kernel_manager = self.serverapp.kernel_manager
        if self.kernel_idle_timeout > 0 and not kernel_manager.cull_idle_timeout:
            kernel_manager.cull_idle_timeout = int(self.kernel_idle_timeout)
        if self.kernel_cgroups in ("v1", "v2") and (self.serverapp.gateway_config.gateway_enabled
                                                    or self.sandbox == "none"):
            if self.serverapp.gateway_config.gateway_enabled:
                where = "kernels run on a pool (--gateway-url), whose hosts set rlimits only"
            else:
                problem = getattr(self, "_sandbox_problem", None)
                where = f"kernels are not sandboxed here (c.Warden.sandbox is 'none'{': ' + problem if problem else ''})"
            self._refuse(f"c.Warden.kernel_cgroups is {self.kernel_cgroups!r} but {where}")
        if self.serverapp.gateway_config.gateway_enabled:
            self._start_pool()
            return
        if self.sandbox == "none":
            why = getattr(self, "_sandbox_problem", "c.Warden.sandbox is 'none'")
            self.log.warning(
                "\n%s\njupyter-warden: KERNELS ARE NOT SANDBOXED (%s). Every kernel runs as the "
                "server's account and can read the warden's database, key ring and every file: "
                "guarantees G4 and G5 do not hold. Only for a single-user laptop.\n%s",
                "!" * 78, why, "!" * 78,
            )
            self.sandbox_runner = None
            return
        from jupyter_core.paths import jupyter_config_path

        network = self._network_subjects()
        first, last = self.sandbox_uid_range
        if first <= self.sandbox_gid <= last or self.sandbox_gid == 0:
            self._refuse("c.Warden.sandbox_gid must not be 0 nor inside c.Warden.sandbox_uid_range")
        hidden = [self.state_dir, *(p for p in jupyter_config_path() if os.path.isdir(p))]
        limits, cgroups = self._kernel_cgroups(self._kernel_limits())
        self.sandbox_runner = sandboxing.Sandbox(
            uids=sandboxing.KernelUids(self.store, first, last),
            gid=self.sandbox_gid,
            engine=self.engine,
            root_dir=self.serverapp.root_dir,
            hidden=hidden,
            system_paths=self.sandbox_system_paths,
            limits=limits,
            network_subjects=network,
            max_entries=self.sandbox_max_entries,
            max_age=self.kernel_max_age,
            log=self.log,
            workspace=self.workspace_dir,
            cgroups=cgroups,
        )
        self.sandbox_watch = AccessWatch(self, self.kernel_recheck_interval)
        kernel_manager.warden_app = self
        self.log.info("jupyter-warden: kernels sandboxed by bubblewrap, uids %d-%d", first, last)

    def _kernel_cgroups(self, limits):
        """The kernels' cgroups (c.Warden.kernel_cgroups), and the limits with theirs in."""
        import atexit
        import dataclasses

        memory, pids = self.kernel_memory_limit, self.kernel_cgroup_pids_limit
        if not (memory or pids) and self.kernel_cgroups in ("auto", "none"):
            cgroups, why = None, "kernel_memory_limit and kernel_cgroup_pids_limit are both 0"
        else:
            try:
                cgroups, why = sandboxing.Cgroups.open(self.kernel_cgroups)
            except sandboxing.CgroupError as e:
                self._refuse(f"c.Warden.kernel_cgroups is {self.kernel_cgroups!r} but {e}")
        if cgroups is None:
            self.log.info("jupyter-warden: no cgroup limits on kernels (memory.max, pids.max): %s; "
                          "rlimits only", why)
            return limits, None
        # Kernels are shut down after extensions stop: the last one's cleanup, or the
        # process's exit, removes the server's folders.
        atexit.register(cgroups.close, kill=True)
        self.log.info("jupyter-warden: each kernel in a cgroup %s of its own, in %s: memory %s, pids %s",
                      cgroups.backend, ", ".join(map(str, cgroups.where)), memory or "no limit", pids or "no limit")
        return dataclasses.replace(limits, cgroup=cgroups.backend, cgroup_memory_bytes=memory,
                                   cgroup_pids=pids), cgroups

    def _start_pool(self):
        """Kernels on an Enterprise Gateway: sign each launch request for the pool hosts."""
        from .pool.launch_token import load_or_create_key
        from tornado.ioloop import IOLoop

        from .pool.warden import PoolLaunches

        first, last = self.sandbox_uid_range
        if first <= self.sandbox_gid <= last or self.sandbox_gid == 0:
            self._refuse("c.Warden.sandbox_gid must not be 0 nor inside c.Warden.sandbox_uid_range")
        try:
            key = load_or_create_key(self.pool_key_file)
        except (OSError, ValueError) as e:
            self._refuse(f"the pool key (c.Warden.pool_key_file) can't be read: {e}")
        self.sandbox_runner = None
        self.pool = PoolLaunches(self, key, sandboxing.KernelUids(self.store, first, last), self.sandbox_gid,
                                 self._kernel_limits(), self._network_subjects(), self.kernel_max_age)
        self.serverapp.kernel_manager.warden_pool = self.pool
        IOLoop.current().add_callback(self.pool.check_gateway, self.serverapp.kernel_manager)
        self.log.info("jupyter-warden: kernels run on the Enterprise Gateway at %s; each pool host "
                      "sandboxes them (docs/pool.md)", self.serverapp.gateway_config.url)

    def _kernel_limits(self):
        return sandboxing.Limits(
            memory_bytes=self.kernel_memory_limit,
            cpu_seconds=self.kernel_cpu_limit,
            processes=self.kernel_process_limit,
            file_bytes=self.kernel_file_size_limit,
            open_files=self.kernel_open_files_limit,
        )

    def _network_subjects(self) -> frozenset:
        from .names import name_key

        network = set()
        for subject in self.sandbox_network:
            kind, _, name = subject.partition(":")
            if subject == "authenticated":
                network.add(subject)
            elif kind in ("user", "group") and name:
                network.add(f"{kind}:{name_key(name)}")
            else:
                self._refuse(f"c.Warden.sandbox_network: {subject!r} is not user:NAME, group:NAME or authenticated")
        return frozenset(network)

    def initialize_handlers(self):
        self.handlers.extend(warden_handlers())
        if not install_events_socket(self.serverapp.web_app):
            self.log.warning("jupyter-warden: the event bus socket was not found; pages poll for access changes")
        self._guard_collaboration()

    def _guard_collaboration(self):
        """Swap jupyter-collaboration's document websocket for the guarded one, if it is loaded.

        Extensions load in name order, so jupyter_server_ydoc's routes exist by now.
        Had it loaded later, its stock handler would stay, refused to all but admins.
        """
        try:
            from .enforce.rtc import install_guarded_handlers
        except ImportError:
            return  # jupyter-collaboration is not installed
        self._keep_document_history_in_state()
        if install_guarded_handlers(self.serverapp.web_app):
            self.log.info("jupyter-warden: real-time collaboration is guarded")
        elif "jupyter_server_ydoc" in self.serverapp.extension_manager.extensions:
            self.log.warning("jupyter-warden: real-time collaboration's handlers were not found; "
                             "they stay for server admins only")

    def _keep_document_history_in_state(self):
        """Put jupyter-collaboration's Y store (every document's full history) in the state folder.

        Its default, ``.jupyter_ystore.db`` in the server's working folder, is
        often the served root, where a kernel could read another user's
        history. An operator's own path is kept unless it lies under the root.
        """
        ydoc = self.serverapp.extension_manager.extension_apps.get("jupyter_server_ydoc")
        if not ydoc:
            return
        app = next(iter(ydoc))
        store_config = app.config.SQLiteYStore
        current = Path(store_config.get("db_path", ".jupyter_ystore.db")).expanduser().resolve()
        root = Path(self.serverapp.root_dir).expanduser().resolve()
        if "db_path" not in store_config or root == current or root in current.parents:
            store_config.db_path = str(Path(self.state_dir).expanduser().resolve() / "ystore.db")
            self.log.info("jupyter-warden: document history kept in %s", store_config.db_path)

    def _refuse(self, reason: str):
        # Extension errors are otherwise logged and skipped; a server that
        # can't enforce its rules must not start at all.
        self.log.critical("jupyter-warden can't start: %s", reason)
        raise SystemExit(f"jupyter-warden: {reason}")

    async def stop_extension(self):
        for registry in ("kernel_connections", "document_connections"):
            connections = getattr(self, registry, None)
            if connections is not None:
                connections.stop()
        notices = getattr(self, "access_notices", None)
        if notices is not None:
            notices.stop()
        watch = getattr(self, "sandbox_watch", None)
        if watch is not None:
            watch.stop()
        cgroups = getattr(getattr(self, "sandbox_runner", None), "cgroups", None)
        if cgroups is not None:
            # Kernels still run (jupyter_server stops them after extensions): the last
            # one's cleanup removes the server's folders.
            cgroups.stopping = True
            cgroups.close()
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.stop()
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()
        channels = getattr(self, "vault_channels", None)
        if channels is not None:
            await channels.close_all()
        store = getattr(self, "store", None)
        if store is not None:
            store.dispose()
