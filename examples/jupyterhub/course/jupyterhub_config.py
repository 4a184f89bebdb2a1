"""JupyterHub with one shared course server: jupyter-warden, spawned for the instructor.

Students sign in to the hub and reach the instructor's server through the
hub (the course group's role, or a share); inside it, each sees only what
the warden grants them. See docs/jupyterhub.md. Run: jupyterhub -f this_file.
Everything site-specific is read from the environment, with these defaults.
"""

import os
import sys

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

INSTRUCTOR = os.environ.get("COURSE_INSTRUCTOR", "instructor")
COURSE_GROUP = os.environ.get("COURSE_GROUP", "cs101")
COURSE_ROOT = os.environ.get("COURSE_ROOT", "/srv/course")
# The server's home and the warden's state: both outside the served root.
COURSE_HOME = os.environ.get("COURSE_HOME", "/var/lib/jupyter-warden/course-home")
WARDEN_STATE = os.environ.get("COURSE_WARDEN_STATE", "/var/lib/jupyter-warden/course")

# Your authenticator here (oauthenticator, ldapauthenticator, ...). Group
# membership is the hub's: c.JupyterHub.load_groups, the admin page, the REST
# API, or an authenticator that manages groups (Authenticator.manage_groups).
c.JupyterHub.authenticator_class = os.environ.get("COURSE_AUTHENTICATOR", "pam")
# Anyone the authenticator accepts may sign in to the hub; only the course
# group (and those the instructor shares with) reach the course server.
c.Authenticator.allow_all = True

# Students reach the instructor's server through their group. A single
# person (a TA, a guest) can be let in with a share from the hub's UI or
# API (POST /hub/api/shares/INSTRUCTOR/). Either way they get only what the
# warden grants them there.
c.JupyterHub.load_roles = [
    {
        "name": "course-students",
        "groups": [COURSE_GROUP],
        "scopes": [f"access:servers!server={INSTRUCTOR}/"],
    },
]

# The course server runs as the hub's own account (root): the warden's
# sandbox needs root to run each student's kernels under their own uid. The
# warden, not the Unix account, keeps students apart, so it must be the only
# server this hub ever starts.
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = COURSE_HOME
c.Spawner.notebook_dir = COURSE_ROOT
c.Spawner.default_url = "/lab"
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = [
    "--ServerApp.allow_root=True",  # as above: the sandbox needs root
    "--Warden.identity=jupyterhub",
    f"--Warden.state_dir={WARDEN_STATE}",
    # The instructor administers the course server; hub admins do not,
    # unless --Warden.hub_admins_are_admins=True.
    f"--Warden.hub_admin_users={INSTRUCTOR}",
    # A group change in the hub takes effect within this many seconds.
    "--Warden.hub_cache_max_age=60",
]


def only_the_course_server(spawner):
    if spawner.user.name != INSTRUCTOR or spawner.name:
        raise ValueError(f"this hub runs only {INSTRUCTOR}'s course server")


c.Spawner.pre_spawn_hook = only_the_course_server
# After signing in to the hub, everyone lands on the course server (students
# have no server of their own to start).
c.JupyterHub.default_url = f"/user/{INSTRUCTOR}/lab"
