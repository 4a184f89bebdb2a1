"""JupyterHub with a shared team server: jupyter-warden, run by the hub as a service.

The hub starts the server itself (a managed service at /services/team/),
and lets the team's group reach it; inside it, each member sees only what
the warden grants them. See docs/jupyterhub.md. Run: jupyterhub -f this_file.
Everything site-specific is read from the environment, with these defaults.
"""

import os
import sys

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

SERVICE = os.environ.get("TEAM_SERVICE", "team")
TEAM_GROUP = os.environ.get("TEAM_GROUP", "team")
TEAM_LEAD = os.environ.get("TEAM_LEAD", "lead")
TEAM_PORT = int(os.environ.get("TEAM_PORT", "10101"))
TEAM_ROOT = os.environ.get("TEAM_ROOT", "/srv/team")
# The server's home and the warden's state: both outside the served root.
TEAM_HOME = os.environ.get("TEAM_HOME", "/var/lib/jupyter-warden/team-home")
WARDEN_STATE = os.environ.get("TEAM_WARDEN_STATE", "/var/lib/jupyter-warden/team")

# Your authenticator here (oauthenticator, ldapauthenticator, ...). The hub
# keeps the groups: c.JupyterHub.load_groups, the admin page, the REST API,
# or an authenticator that manages them (Authenticator.manage_groups).
c.JupyterHub.authenticator_class = os.environ.get("TEAM_AUTHENTICATOR", "pam")
c.Authenticator.allow_all = True

c.JupyterHub.services = [
    {
        "name": SERVICE,
        "url": f"http://127.0.0.1:{TEAM_PORT}",
        # No "user": the hub starts it as its own account (root), which the
        # warden's sandbox needs to run each member's kernels as their own uid.
        "command": [
            sys.executable, "-m", "jupyterhub.singleuser",
            "--ServerApp.allow_root=True",
            "--Warden.identity=jupyterhub",
            f"--Warden.state_dir={WARDEN_STATE}",
            # The team lead administers the server; hub admins do not,
            # unless --Warden.hub_admins_are_admins=True.
            f"--Warden.hub_admin_users={TEAM_LEAD}",
            # A group change in the hub takes effect within this many seconds.
            "--Warden.hub_cache_max_age=60",
        ],
        "environment": {
            "HOME": TEAM_HOME,
            "JUPYTERHUB_ROOT_DIR": TEAM_ROOT,
            "JUPYTERHUB_DEFAULT_URL": "/lab",
        },
        "cwd": TEAM_HOME,
        "oauth_no_confirm": True,
    },
]

# Who may reach the team server: the team's hub group. Anyone else the hub
# lets in (a role, an admin) still gets only what the warden grants.
c.JupyterHub.load_roles = [
    {
        "name": "team-members",
        "groups": [TEAM_GROUP],
        "scopes": [f"access:services!service={SERVICE}"],
    },
]
