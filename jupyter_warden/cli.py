"""The `jupyter-warden` command line (also reachable as `jupyter warden`).

Each command opens the store named by --db/WARDEN_DB in the state folder
named by --state/WARDEN_STATE, does one transaction, and exits 0 on
success, 1 when the operation is refused, and 2 on a bad argument, with
one sentence saying why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import re
import sys
from pathlib import Path

from .identity.accounts import AccountError, Accounts
from .names import NAME_RULE
from .store import Store, StoreError, default_db_url, default_state_dir, ensure_state_dir


class Refused(Exception):
    """An operation the store or the rules refused: exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, and exit code 2, as the CLI contract promises.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- shared helpers --------------------------------------------------------

_DURATION = re.compile(r"(\d+)\s*([smhdw])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time (local if no zone given) or a duration from now: 30m, 2h, 7d."""
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = match.groups()
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use ISO 8601 (2026-12-01T09:00) or a duration (30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.astimezone(dt.timezone.utc)


def _fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M %Z") if value else "-"


def state_dir_of(args) -> str:
    return str(Path(args.state or default_state_dir()).expanduser())


def open_store(args) -> Store:
    try:
        state = ensure_state_dir(state_dir_of(args))
    except OSError as e:
        raise Refused(f"can't create the state folder {e.filename}: {e.strerror}") from None
    store = Store(args.db or os.environ.get("WARDEN_DB") or default_db_url(state))
    store.upgrade()
    return store


def _read_password(args, prompt_twice: bool = True) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise Refused("--password-stdin was given but standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("Password: ")
    if prompt_twice and getpass.getpass("Again: ") != first:
        raise Refused("the two passwords differ; nothing was changed")
    return first


# -- user ------------------------------------------------------------------


def cmd_user_add(args):
    accounts = Accounts(open_store(args))
    password = _read_password(args)
    account = accounts.add_user(
        args.name, password=password, admin=args.admin, display_name=args.display_name
    )
    kind = "admin" if account.admin else "user"
    note = "" if password is not None else " without a password (tokens or proxy sign-in only)"
    print(f"added {kind} {account.name}{note}")


def cmd_user_password(args):
    accounts = Accounts(open_store(args))
    password = _read_password(args)
    if password is None:
        raise Refused("no password given: pass it on standard input with --password-stdin")
    accounts.set_password(args.name, password)
    print(f"password of {args.name} changed; their browser sessions were ended")


def cmd_user_admin(args):
    Accounts(open_store(args)).set_admin(args.name, args.state_value == "on")
    print(f"{args.name} is {'now' if args.state_value == 'on' else 'no longer'} an admin")


def cmd_user_token(args):
    accounts = Accounts(open_store(args))
    if args.list:
        tokens = accounts.list_tokens(args.name)
        print(f"{'ID':>4}  {'STATE':8} {'CREATED':22} {'EXPIRES':22} NOTE")
        for t in tokens:
            print(
                f"{t.id:>4}  {t.state():8} {_fmt_time(t.created):22} "
                f"{_fmt_time(t.expires_at):22} {t.note or ''}"
            )
        return
    if args.revoke is not None:
        accounts.revoke_token(args.name, args.revoke)
        print(f"token {args.revoke} of {args.name} revoked")
        return
    token_id, token = accounts.create_token(args.name, expires_at=args.expires, note=args.note)
    # The token itself alone on stdout, so scripts can capture it; the rest on stderr.
    print(token)
    expiry = f", expires {_fmt_time(args.expires)}" if args.expires else ""
    print(
        f"token {token_id} for {args.name}{expiry}. It is shown only this once; "
        "send it as 'Authorization: token <token>'.",
        file=sys.stderr,
    )


def cmd_user_list(args):
    users = Accounts(open_store(args)).list_users()
    print(f"{'NAME':24} {'ADMIN':6} {'PASSWORD':9} GROUPS")
    for u in users:
        print(
            f"{u.name:24} {'yes' if u.admin else 'no':6} "
            f"{'set' if u.has_password else 'none':9} {','.join(u.groups)}"
        )


def cmd_user_remove(args):
    Accounts(open_store(args)).remove_user(args.name)
    print(f"removed user {args.name}; their sessions and tokens no longer work")


# -- group -----------------------------------------------------------------


def cmd_group_add(args):
    name = Accounts(open_store(args)).add_group(args.name)
    print(f"added group {name}")


def cmd_group_members(args):
    members = Accounts(open_store(args)).change_members(
        args.name, add=args.add or [], remove=args.remove or []
    )
    print(f"{args.name}: {' '.join(members) if members else '(no members)'}")


def cmd_group_import(args):
    added, created = Accounts(open_store(args)).import_roster(
        args.name, Path(args.roster), create_missing=args.create_missing
    )
    extra = f", {len(created)} new account(s) without a password" if created else ""
    print(f"{len(added)} user(s) in group {args.name}{extra}")


def cmd_group_list(args):
    for name, members in Accounts(open_store(args)).list_groups().items():
        print(f"{name}: {' '.join(members) if members else '(no members)'}")


# -- serve and demo --------------------------------------------------------


def jupyter_argv(args, root: Path, state: str | None) -> list[str]:
    """Jupyter options for what was given; anything not given comes from config."""
    argv = [
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.ip={args.ip}",
        f"--ServerApp.port={args.port}",
        "--ServerApp.open_browser=False",
        "--ServerApp.jpserver_extensions=jupyter_warden=True",
    ]
    if state:
        argv.append(f"--Warden.state_dir={state}")
    if args.db:
        argv.append(f"--Warden.db_url={args.db}")
    return argv


def _launch_lab(argv: list[str]) -> None:
    from jupyterlab.labapp import LabApp

    LabApp.launch_instance(argv=argv)


def cmd_serve(args):
    root = Path(args.root or os.getcwd()).expanduser().resolve()
    if not root.is_dir():
        raise Refused(f"the root folder {root} does not exist")
    # The extension opens (and migrates) the store itself, and refuses to
    # start if it can't; state and database come from the options, the
    # environment, or c.Warden in the config files, in that order.
    state = args.state or os.environ.get("WARDEN_STATE")
    if args.db is None and os.environ.get("WARDEN_DB"):
        args.db = os.environ["WARDEN_DB"]
    _launch_lab(jupyter_argv(args, root, state) + args.jupyter_args)


def cmd_demo(args):
    from .demo import prepare_demo

    # The demo keeps to its own folder and database: its accounts have
    # published passwords, so WARDEN_STATE and WARDEN_DB are not used.
    home = Path(os.environ.get("WARDEN_DEMO_HOME") or Path.home() / ".local/share/jupyter-warden-demo")
    args.state = str(Path(args.state or home / "state").expanduser().resolve())
    args.db = args.db or default_db_url(args.state)
    root = Path(args.root or home / "notebooks").expanduser().resolve()
    store = open_store(args)
    users = prepare_demo(store, root)
    store.dispose()
    url = f"http://{args.ip}:{args.port}/lab"
    print(f"\njupyter-warden demo\n  notebooks: {root}\n  state:     {state_dir_of(args)}\n")
    print(f"Open {url} and sign in as one of:")
    for name, (password, role) in users.items():
        print(f"  {name:6} password {password:18} {role}")
    print()
    extra = ["--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        extra.append("--ServerApp.allow_root=True")
    _launch_lab(jupyter_argv(args, root, args.state) + extra)


# -- the parser ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--state", metavar="DIR", help="state folder (default: $WARDEN_STATE or ~/.local/share/jupyter-warden)"
    )
    common.add_argument(
        "--db", metavar="URL", help="database URL (default: $WARDEN_DB or SQLite in the state folder)"
    )

    parser = _Parser(
        prog="jupyter-warden",
        description="Administer a jupyter-warden server: accounts, groups, and the server itself.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def sub(group, name, func, help, **kw):
        p = group.add_parser(name, help=help, description=help, parents=[common], **kw)
        p.set_defaults(func=func)
        return p

    def server_options(p, port=8888):
        p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
        p.add_argument("--port", type=int, default=port, help=f"port to listen on (default: {port})")

    serve = sub(commands, "serve", cmd_serve, "Run JupyterLab with jupyter-warden.")
    serve.add_argument("--root", metavar="DIR", help="the folder to serve (default: the current folder)")
    server_options(serve)
    serve.add_argument(
        "jupyter_args", nargs=argparse.REMAINDER, help="further Jupyter options, e.g. --ServerApp.base_url=/x/"
    )

    demo = commands.add_parser(
        "demo",
        help="Run an embedded demo: users, a group and notebooks.",
        description="Run an embedded demo: users, a group and notebooks. It keeps to its own "
        "folder ($WARDEN_DEMO_HOME, default ~/.local/share/jupyter-warden-demo) and ignores "
        "WARDEN_STATE and WARDEN_DB.",
    )
    demo.set_defaults(func=cmd_demo)
    demo.add_argument("--state", metavar="DIR", help="the demo's state (default: DEMO_HOME/state)")
    demo.add_argument("--db", metavar="URL", help="the demo's database (default: SQLite in its state)")
    demo.add_argument("--root", metavar="DIR", help="the demo's notebooks (default: DEMO_HOME/notebooks)")
    server_options(demo)

    user = commands.add_parser("user", help="Manage accounts.", description="Manage accounts.")
    users = user.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    p = sub(users, "add", cmd_user_add, f"Add a user. Names: {NAME_RULE}.")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="make the user a server admin")
    p.add_argument("--display-name", help="the name shown to others")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub(users, "password", cmd_user_password, "Change a password; ends the user's browser sessions.")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub(users, "admin", cmd_user_admin, "Turn a user's admin flag on or off.")
    p.add_argument("name")
    p.add_argument("state_value", choices=["on", "off"], metavar="on|off")
    p = sub(users, "token", cmd_user_token, "Create (default), list or revoke a user's API tokens.")
    p.add_argument("name")
    p.add_argument("--expires", type=parse_time, metavar="T", help="expiry: ISO 8601 time or a duration (30m, 12h, 90d)")
    p.add_argument("--note", help="what the token is for")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list the user's tokens instead")
    mode.add_argument("--revoke", type=int, metavar="ID", help="revoke token ID instead")
    sub(users, "list", cmd_user_list, "List users.")
    p = sub(users, "remove", cmd_user_remove, "Remove a user, their sessions and their tokens.")
    p.add_argument("name")

    group = commands.add_parser("group", help="Manage groups.", description="Manage groups.")
    groups = group.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    p = sub(groups, "add", cmd_group_add, "Add a group.")
    p.add_argument("name")
    p = sub(groups, "members", cmd_group_members, "Show, add or remove a group's members.")
    p.add_argument("name")
    p.add_argument("--add", nargs="+", metavar="USER", help="users to add")
    p.add_argument("--remove", nargs="+", metavar="USER", help="users to remove")
    p = sub(groups, "import", cmd_group_import, "Add the users of a roster CSV (a 'username' column) to a group.")
    p.add_argument("name")
    p.add_argument("roster", metavar="ROSTER.csv")
    p.add_argument(
        "--create-missing",
        action="store_true",
        help="create unknown users without a password (default: refuse the import and name them)",
    )
    sub(groups, "list", cmd_group_list, "List groups and their members.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.jupyter_args[:1] == ["--"]:
        args.jupyter_args = args.jupyter_args[1:]
    try:
        args.func(args)
    except (Refused, AccountError, StoreError) as e:
        print(f"jupyter-warden: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
