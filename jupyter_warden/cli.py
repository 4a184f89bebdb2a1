"""The `jupyter-warden` command line (also reachable as `jupyter warden`).

Each command opens the store named by --db/WARDEN_DB in the state folder
named by --state/WARDEN_STATE, does one transaction, and exits 0 on
success, 1 when the operation is refused, and 2 on a bad argument, with
one sentence saying why. Every change to accounts or policy is audited.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import re
import sys
from pathlib import Path

from .audit.log import AuditLog, iter_lines, load_or_create_key
from .identity.accounts import AccountError, Accounts
from .names import NAME_RULE
from .policy.changes import Audited, Policy, PolicyError
from .policy.engine import Actor, PolicyEngine
from .policy.levels import CAPABILITIES, LEVELS, LINK_LEVELS
from .policy.paths import BadPath, normalize_path
from .secrets.vault import VaultError
from .master_key import MasterKeyError, load_master_key
from .sealed import (
    DEFAULT_TAG,
    ROLES,
    KeyRing,
    KeyRingError,
    PlaceholderError,
    UnsealError,
    seal_notebook,
    unseal_notebook,
)
from .sealed.notebook import write_atomically
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


def parse_since(value: str) -> dt.datetime:
    """Like parse_time, but a duration counts back from now: 7d is the last seven days."""
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = match.groups()
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**{_UNITS[unit]: int(amount)})
    return parse_time(value)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return number


def policy_path(value: str) -> str:
    """A path relative to the served root, in the policy's one spelling ("" is the root)."""
    try:
        return normalize_path(value)
    except BadPath as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _subject_type(*kinds: str):
    def subject(value: str) -> str:
        kind, sep, rest = value.partition(":")
        if value == "authenticated" or (sep and rest and kind in kinds):
            return value
        forms = ", ".join(f"{k}:NAME" for k in kinds)
        raise argparse.ArgumentTypeError(f"{value!r} is not a subject: use {forms} or authenticated")

    return subject


def _fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M %Z") if value else "-"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _shown(path: str) -> str:
    return f"'{path or '/'}'"


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


# -- the audit trail of CLI changes ------------------------------------------


def cli_actor() -> str:
    """Who made a change from the command line, as the audit log names them."""
    try:
        who = getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        who = f"uid-{os.getuid()}"
    return f"cli:{who}"


def open_audit(args, store: Store) -> AuditLog:
    """The audit log, keyed from the state folder, opened before any change is made.

    A state folder without the key beside a log that has records is the
    wrong folder: records written under a fresh key would break the chain.
    """
    state = Path(state_dir_of(args))
    if not (state / "audit.key").exists() and AuditLog(store, b"").tail(1):
        raise Refused(
            f"the audit log has records but {state} holds no audit key: point --state "
            "(or WARDEN_STATE) at the server's state folder"
        )
    try:
        key = load_or_create_key(state)
    except FileExistsError:  # the server made it a moment ago
        key = load_or_create_key(state)
    args.audit_log = AuditLog(store, key)
    return args.audit_log


def record(args, path: str | None = None, grant_id: int | None = None, **details) -> None:
    args.audit_log.record(
        cli_actor(),
        args.audit_action,
        "allow",
        path=path,
        grant_id=grant_id,
        details={k: v for k, v in details.items() if v is not None} or None,
    )


def audited(args, **details) -> Audited:
    """For a policy change: its record is written in the change's own transaction."""
    return Audited(args.audit_log, cli_actor(), None, {k: v for k, v in details.items() if v is not None} or None)


def _record_refusal(args, error: Exception) -> None:
    """A refused change is audited too, when the log could be opened."""
    log = getattr(args, "audit_log", None)
    action = getattr(args, "audit_action", None)
    if log is None or action is None:
        return
    path = getattr(args, "path", None)
    asked = {k: getattr(args, k, None) for k in ("name", "to", "level", "label", "id", "key", "role")}
    try:
        log.record(
            cli_actor(),
            action,
            "deny",
            path=path,
            reason=str(error),
            details={k: v for k, v in asked.items() if isinstance(v, str)} or None,
        )
    except Exception:
        pass  # the refusal itself is what the user must see, not a second failure


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


def _accounts(args) -> Accounts:
    """The accounts of the store, with the audit log opened for the change to come."""
    store = open_store(args)
    open_audit(args, store)
    return Accounts(store)


def cmd_user_add(args):
    accounts = _accounts(args)
    password = _read_password(args)
    account = accounts.add_user(
        args.name, password=password, admin=args.admin, display_name=args.display_name
    )
    record(args, op="add", user=account.name, admin=account.admin, password=password is not None)
    kind = "admin" if account.admin else "user"
    note = "" if password is not None else " without a password (tokens or proxy sign-in only)"
    print(f"added {kind} {account.name}{note}")


def cmd_user_password(args):
    accounts = _accounts(args)
    password = _read_password(args)
    if password is None:
        raise Refused("no password given: pass it on standard input with --password-stdin")
    accounts.set_password(args.name, password)
    record(args, op="password", user=args.name)
    print(f"password of {args.name} changed; their browser sessions were ended")


def cmd_user_admin(args):
    _accounts(args).set_admin(args.name, args.state_value == "on")
    record(args, op="admin", user=args.name, admin=args.state_value == "on")
    print(f"{args.name} is {'now' if args.state_value == 'on' else 'no longer'} an admin")


def cmd_user_token(args):
    if args.list:
        args.audit_action = None  # reading is not a change
    accounts = _accounts(args)
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
        record(args, op="token.revoke", user=args.name, token_id=args.revoke)
        print(f"token {args.revoke} of {args.name} revoked")
        return
    token_id, token = accounts.create_token(args.name, expires_at=args.expires, note=args.note)
    record(args, op="token.create", user=args.name, token_id=token_id, expires=_iso(args.expires))
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
    _accounts(args).remove_user(args.name)
    record(args, op="remove", user=args.name)
    print(f"removed user {args.name}; their sessions and tokens no longer work")


# -- group -----------------------------------------------------------------


def cmd_group_add(args):
    name = _accounts(args).add_group(args.name)
    record(args, op="add", group=name)
    print(f"added group {name}")


def cmd_group_members(args):
    changing = bool(args.add or args.remove)
    if not changing:
        args.audit_action = None  # only showing the members
    members = _accounts(args).change_members(
        args.name, add=args.add or [], remove=args.remove or []
    )
    if changing:
        record(args, op="members", group=args.name, add=args.add, remove=args.remove)
    print(f"{args.name}: {' '.join(members) if members else '(no members)'}")


def cmd_group_import(args):
    added, created = _accounts(args).import_roster(
        args.name, Path(args.roster), create_missing=args.create_missing
    )
    record(args, op="import", group=args.name, added=added, created=created or None)
    extra = f", {len(created)} new account(s) without a password" if created else ""
    print(f"{len(added)} user(s) in group {args.name}{extra}")


def cmd_group_list(args):
    for name, members in Accounts(open_store(args)).list_groups().items():
        print(f"{name}: {' '.join(members) if members else '(no members)'}")


# -- grants ----------------------------------------------------------------


def _policy(args) -> tuple[Store, Policy]:
    """The store's policy, with the audit log opened for the change to come."""
    store = open_store(args)
    open_audit(args, store)
    return store, Policy(store)


def _window(grant) -> str:
    parts = []
    if grant.not_before:
        parts.append(f"from {_fmt_time(grant.not_before)}")
    if grant.not_after:
        parts.append(f"until {_fmt_time(grant.not_after)}")
    return f" ({', '.join(parts)})" if parts else ""


def _in_force(grant, now: dt.datetime) -> bool:
    return (grant.not_before is None or grant.not_before <= now) and (
        grant.not_after is None or now < grant.not_after
    )


def cmd_grant(args):
    _store, policy = _policy(args)
    ref = policy.grant(
        args.path, args.to, args.level, args.not_before, args.not_after, by=cli_actor(),
        audited=audited(args, not_before=_iso(args.not_before), not_after=_iso(args.not_after)),
    )
    print(f"grant #{ref.id}: {ref.subject} has {ref.level} on {_shown(ref.path)}{_window(ref)}")


def cmd_revoke(args):
    _store, policy = _policy(args)
    ref = policy.revoke(args.path, args.to, audited=audited(args))
    print(f"revoked grant #{ref.id} ({ref.subject} {ref.level} on {_shown(ref.path)})")


def cmd_access(args):
    """Every grant on the path and above it, then what each subject and user ends up with."""
    store = open_store(args)
    policy, engine = Policy(store), PolicyEngine(store)
    path, now = args.path, dt.datetime.now(dt.timezone.utc)
    grants = policy.grants_on(path)
    print(f"Access to {_shown(path)}\n")

    print("Grants on it and on the folders above it, the deepest first:")
    if not grants:
        print("  (none)")
    else:
        print(f"  {'#':>4}  {'ON':30} {'SUBJECT':24} {'LEVEL':15} IN FORCE")
        for g in grants:
            where = _shown(g.path) + ("" if g.path == path else " (inherited)")
            state = "yes" if _in_force(g, now) else "no"
            print(f"  {g.id:>4}  {where:30} {g.subject:24} {g.level:15} {state}{_window(g)}")

    labels = policy.labels_on(path)
    if labels:
        print("\nLabels in force:")
        for label in labels:
            print(f"  {label.name} (on {_shown(label.path)}): {_label_rules(label)}")

    # A subject's own answer: its deepest grant in force (the engine's rule for
    # one subject). Users combine several subjects, so they get their own list.
    print("\nBy subject (its deepest grant in force):")
    deciding: dict[str, object] = {}
    for g in grants:  # deepest first
        if _in_force(g, now) and g.subject not in deciding:
            deciding[g.subject] = g
    if not deciding:
        print("  (no subject has a grant in force)")
    for subject, g in deciding.items():
        level = g.level
        if subject.startswith("link:"):
            level = engine.effective(Actor.for_link(subject[5:]), path).level
            if level != g.level:
                level = f"{level} (a label forbids share links here)"
        print(f"  {subject:24} {level:15} grant #{g.id} on {_shown(g.path)}")

    users = Accounts(store).list_users()
    granted = {g.subject for g in grants}
    named = [
        u for u in users if not u.admin and set(Actor.for_account(u).subjects()[:-1]) & granted
    ]
    print("\nBy user (own, group and authenticated grants together, as the engine decides):")
    for u in named:
        effective = engine.effective(Actor.for_account(u), path)
        print(f"  {u.name:24} {effective.level:15} {effective.reason}")
    everyone = deciding.get("authenticated")
    rest = f"{everyone.level:15} grant #{everyone.id} on {_shown(everyone.path)}" if everyone else "none"
    print(f"  {'(anyone else signed in)':24} {rest}")
    admins = [u.name for u in users if u.admin]
    if admins:
        print(f"  {'(server admins)':24} {'manage':15} always: {', '.join(admins)}")


def _actor_for(store: Store, who: str) -> Actor:
    if who.startswith("link:"):
        if Policy(store).get_link(who[5:]) is None:
            raise Refused(f"there is no share link {who[5:]!r}; see `jupyter-warden link list`")
        return Actor.for_link(who[5:])
    account = Accounts(store).get_user(who)
    if account is None:
        raise Refused(f"no user named {who!r}; see `jupyter-warden user list`")
    return Actor.for_account(account)


def cmd_explain(args):
    store = open_store(args)
    actor = _actor_for(store, args.user)
    decision = PolicyEngine(store).check(actor, args.action, args.path)
    verdict = "allowed" if decision.allowed else "denied"
    may = "may" if decision.allowed else "may not"
    groups = f" (groups: {', '.join(sorted(actor.groups))})" if actor.groups else ""
    print(f"{verdict}: {actor.name}{groups} {may} {args.action} {_shown(decision.path)}")
    print(f"  because {decision.reason}")
    now = dt.datetime.now(dt.timezone.utc)
    mine = set(actor.subjects())
    for g in Policy(store).grants_on(decision.path):
        if g.subject in mine and not _in_force(g, now):
            print(f"  not counted, outside its time window: grant #{g.id} ({g.subject} {g.level} on {_shown(g.path)}){_window(g)}")


# -- secrets ----------------------------------------------------------------


def _vault(args, need_key: bool = False):
    """The store's vault (as the operator: every secret), the audit log opened for the change."""
    from .master_key import MasterKeyError, load_master_key
    from .secrets.vault import Vault

    store = open_store(args)
    open_audit(args, store)
    key = None
    if need_key:
        try:
            key = load_master_key(state_dir_of(args))
        except (MasterKeyError, OSError) as e:
            raise Refused(f"the master key can't be loaded: {e}") from None
    return Vault(store, key, Policy(store))


def _read_secret_value(name: str) -> str:
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise Refused(f"no value for secret {name!r}: give it on standard input")
    if stdin.isatty():
        return getpass.getpass(f"Value of {name} (not echoed): ")
    value = stdin.read()
    # One trailing newline is the pipe's (echo), not the secret's.
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        raise Refused(
            f"standard input was empty, so secret {name!r} was not set: pipe the value in, "
            f"e.g. `printf %s \"$VALUE\" | jupyter-warden secrets set {name}`"
        )
    return value


def cmd_secrets_set(args):
    from .secrets.vault import check_name

    check_name(args.name)
    vault = _vault(args, need_key=True)
    value = _read_secret_value(args.name)
    info, created = vault.set(args.name, value, None, args.owner, audited=audited(args))
    print(f"secret {info.name} {'created' if created else 'replaced'}, owned by {info.owner}")


def cmd_secrets_grant(args):
    info = _vault(args).grant(args.name, args.to, None, audited=audited(args))
    print(f"secret {info.name} granted to {', '.join(info.grants)}")


def cmd_secrets_revoke(args):
    info = _vault(args).revoke(args.name, args.to, None, audited=audited(args))
    left = ", ".join(info.grants) or "nobody else"
    print(f"{args.to} may no longer read secret {info.name}; granted to: {left}")


def cmd_secrets_list(args):
    secrets_ = _vault(args).list(None)
    if not secrets_:
        print("no secrets")
    for info in secrets_:
        granted = ", ".join(info.grants) or "-"
        print(f"{info.name:32} owner {info.owner:24} granted to {granted}  (updated {_fmt_time(info.updated)})")


def cmd_secrets_remove(args):
    _vault(args).remove(args.name, None, audited=audited(args))
    print(f"secret {args.name} removed")


# -- share links -----------------------------------------------------------

LINK_URL_PATH = "/warden/link/"


def cmd_link_create(args):
    _store, policy = _policy(args)
    link, token = policy.create_link(
        args.path, args.level, expires_at=args.expires, by=cli_actor(),
        audited=audited(args, expires=_iso(args.expires)),
    )
    # The URL alone on stdout, so scripts can capture it; the rest on stderr.
    print(f"{LINK_URL_PATH}{token}")
    expiry = f", until {_fmt_time(link.expires_at)}" if link.expires_at else ", until revoked"
    print(
        f"link {link.id} gives {link.level} on {_shown(link.path)}{expiry}. It is shown only this "
        "once; prefix it with the server's address and base URL, e.g. http://HOST:8888"
        f"{LINK_URL_PATH}wdl_...",
        file=sys.stderr,
    )


def cmd_link_revoke(args):
    _store, policy = _policy(args)
    link = policy.revoke_link(args.id, audited=audited(args))
    print(f"link {link.id} on {_shown(link.path)} revoked; its guests are signed out")


def cmd_link_list(args):
    links = Policy(open_store(args)).list_links(args.path)
    print(f"{'ID':16} {'STATE':8} {'LEVEL':9} {'EXPIRES':22} {'BY':20} PATH")
    for link in links:
        print(
            f"{link.id:16} {link.state():8} {link.level:9} {_fmt_time(link.expires_at):22} "
            f"{link.created_by or '-':20} {_shown(link.path)}"
        )


# -- labels ----------------------------------------------------------------


def _label_rules(label) -> str:
    rules = []
    if label.banner:
        rules.append(f"banner {label.banner!r}" + (f" in {label.colour}" if label.colour else ""))
    if label.no_links:
        rules.append("no share links")
    if label.only_groups:
        rules.append("grants only to " + ", ".join(f"group:{g}" for g in label.only_groups))
    return "; ".join(rules) or "no rules"


def cmd_label_define(args):
    _store, policy = _policy(args)
    label = policy.define_label(
        args.name,
        banner=args.banner,
        colour=args.colour,
        no_links=args.no_links,
        only_groups=args.only_groups or [],
        audited=audited(
            args, banner=args.banner, colour=args.colour, no_links=args.no_links,
            only_groups=args.only_groups or None,
        ),
    )
    print(f"label {label.name}: {_label_rules(label)}")


def cmd_label_set(args):
    _store, policy = _policy(args)
    label = policy.set_label(args.path, args.label, audited=audited(args))
    print(f"{_shown(args.path)} is labelled {label.name}: {_label_rules(label)}")


def cmd_label_remove(args):
    _store, policy = _policy(args)
    policy.remove_label(args.path, args.label, audited=audited(args))
    print(f"label {args.label} taken off {_shown(args.path)}")


def cmd_label_list(args):
    policy = Policy(open_store(args))
    if args.path is None:
        labels = policy.list_labels()
        if not labels:
            print("(no labels defined; see `jupyter-warden label define --help`)")
        for label in labels:
            print(f"{label.name}: {_label_rules(label)}")
        return
    labels = policy.labels_on(args.path)
    if not labels:
        print(f"no label is in force on {_shown(args.path)}")
    for label in labels:
        print(f"{label.name} (on {_shown(label.path)}): {_label_rules(label)}")


# -- keys and sealing --------------------------------------------------------


def _key_ring(args) -> KeyRing:
    """The key ring, unwrapped with the master key the server uses, the audit log opened."""
    store = open_store(args)
    open_audit(args, store)
    return KeyRing(store, load_master_key(state_dir_of(args)))


def cmd_keys_create(args):
    info = _key_ring(args).create(args.name, by=cli_actor(), audited=audited(args))
    print(f"sealing key {info.name} created (version 1); grant it with `keys grant {info.name} --to SUBJECT`")


def cmd_keys_grant(args):
    info = _key_ring(args).grant(args.name, args.to, role=args.role, by=cli_actor(), audited=audited(args))
    print(f"{args.to} may now {'manage' if args.role == 'manage' else 'use'} sealing key {info.name}")


def cmd_keys_revoke(args):
    info = _key_ring(args).revoke(args.name, args.to, audited=audited(args))
    print(f"{args.to} may no longer use sealing key {info.name}; their next sealed run is refused")


def cmd_keys_rotate(args):
    info = _key_ring(args).rotate(args.name, audited=audited(args))
    print(
        f"sealing key {info.name} is now at version {info.current_version}; cells sealed under "
        f"older versions still open. Re-seal them with `seal` to move them to version {info.current_version}."
    )


def cmd_keys_list(args):
    ring = KeyRing(open_store(args), None)  # listing never unwraps material
    keys = ring.list_keys()
    if not keys:
        print("(no sealing keys; see `jupyter-warden keys create --help`)")
    for k in keys:
        grants = ", ".join(f"{s}" + (" (manage)" if r == "manage" else "") for s, r in k.grants) or "(nobody)"
        print(f"{k.name}: version {k.current_version} of {len(k.versions)}, created {_fmt_time(k.created)}; used by {grants}")


def _read_notebook(path: str):
    import nbformat

    try:
        with open(path, encoding="utf-8") as f:
            return nbformat.read(f, as_version=4)
    except OSError as e:
        raise Refused(f"can't read {path}: {e.strerror}") from None
    except Exception as e:  # nbformat's NotJSONError, validation errors
        raise Refused(f"{path} is not a Jupyter notebook: {str(e).splitlines()[0][:200]}") from None


def _write_notebook(nb, path: str, mode: int) -> None:
    import nbformat

    try:
        write_atomically(path, nbformat.writes(nb) + "\n", mode=mode)
    except OSError as e:
        raise Refused(f"can't write {path}: {e.strerror}") from None


def _check_output(args) -> None:
    src, out = Path(args.src), Path(args.output)
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise Refused(
            f"{args.output} is the source notebook: sealing or unsealing in place would overwrite "
            "the only copy; write to another file, then move it"
        )


def cmd_seal(args):
    _check_output(args)
    nb = _read_notebook(args.src)
    ring = _key_ring(args)
    report = seal_notebook(nb, ring, args.key, tag=args.tag)
    # Recorded before the file appears (G8): a seal killed in between is in the log, not done.
    record(args, key=args.key, src=str(Path(args.src).resolve()), out=str(Path(args.output).resolve()),
           sealed=report.sealed or None, resealed=report.resealed or None)
    _write_notebook(nb, args.output, 0o644)
    print(
        f"{args.output}: {len(report.sealed)} cell(s) sealed, {len(report.resealed)} re-sealed, "
        f"{len(report.unchanged)} already sealed, under key {args.key}"
    )


def cmd_unseal(args):
    _check_output(args)
    nb = _read_notebook(args.src)
    ring = _key_ring(args)
    opened = unseal_notebook(nb, ring)
    if not opened:
        raise Refused(f"{args.src} has no sealed cell; nothing to unseal")
    record(args, src=str(Path(args.src).resolve()), out=str(Path(args.output).resolve()), cells=opened)
    # Clear text of sealed cells: readable by the one who asked only.
    _write_notebook(nb, args.output, 0o600)
    print(f"{args.output}: {len(opened)} cell(s) unsealed (the file is 0600: it holds their clear source)")


# -- audit -----------------------------------------------------------------


def _audit_reader(args) -> AuditLog:
    # Reading needs no key; only verify (and writing) does.
    return AuditLog(open_store(args), b"")


def cmd_audit_tail(args):
    for line in iter_lines(_audit_reader(args).tail(args.n)):
        print(line)


def cmd_audit_verify(args):
    store = open_store(args)
    result = open_audit(args, store).verify()
    if not result.ok:
        raise Refused(f"the audit log was tampered with: {result.message}")
    print(result.message)


def cmd_audit_export(args):
    _audit_reader(args).export(sys.stdout, fmt=args.format, since=args.since)


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
    from .demo import DEMO_TRIES, prepare_demo

    # The demo keeps to its own folder and database: its accounts have
    # published passwords, so WARDEN_STATE and WARDEN_DB are not used.
    home = Path(os.environ.get("WARDEN_DEMO_HOME") or Path.home() / ".local/share/jupyter-warden-demo")
    args.state = str(Path(args.state or home / "state").expanduser().resolve())
    args.db = args.db or default_db_url(args.state)
    root = Path(args.root or home / "notebooks").expanduser().resolve()
    store = open_store(args)
    from .master_key import MasterKeyError, load_master_key

    try:
        master_key = load_master_key(args.state)
    except (MasterKeyError, OSError) as e:
        raise Refused(f"the master key can't be loaded: {e}") from None
    users = prepare_demo(store, root, audit=open_audit(args, store), actor=cli_actor(), master_key=master_key)
    store.dispose()
    url = f"http://{args.ip}:{args.port}/lab"
    state = state_dir_of(args)
    print(f"\njupyter-warden demo\n  notebooks: {root}\n  state:     {state}\n")
    print(f"Open {url} and sign in as one of:")
    for name, (password, role) in users.items():
        print(f"  {name:6} password {password:18} {role}")
        for line in DEMO_TRIES.get(name, ()):
            print(f"  {'':6}   - {line}")
    print("\nAsk the policy from another terminal, e.g.:")
    demo_cli = f"jupyter-warden {{}} --state {state}"
    for question in [
        "access cs101/assignment-01.ipynb",
        "keys list",
        "explain bob write cs101/assignment-01.ipynb",
        "link create alice/private-notes.ipynb --level read",
        "audit tail",
    ]:
        print(f"  {demo_cli.format(question)}")
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
        description="Administer a jupyter-warden server: accounts, groups, access to paths, "
        "share links, labels, secrets, the audit log, and the server itself.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def sub(group, name, func, help, audit=None, **kw):
        p = group.add_parser(name, help=help, description=help, parents=[common], **kw)
        # ``audit``: the audit action a change made by this command is recorded as.
        p.set_defaults(func=func, audit_action=audit)
        return p

    def actions(name, help):
        p = commands.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)

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

    users = actions("user", "Manage accounts.")
    p = sub(users, "add", cmd_user_add, f"Add a user. Names: {NAME_RULE}.", audit="admin.user")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="make the user a server admin")
    p.add_argument("--display-name", help="the name shown to others")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub(users, "password", cmd_user_password, "Change a password; ends the user's browser sessions.", audit="admin.user")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub(users, "admin", cmd_user_admin, "Turn a user's admin flag on or off.", audit="admin.user")
    p.add_argument("name")
    p.add_argument("state_value", choices=["on", "off"], metavar="on|off")
    p = sub(users, "token", cmd_user_token, "Create (default), list or revoke a user's API tokens.", audit="admin.user")
    p.add_argument("name")
    p.add_argument("--expires", type=parse_time, metavar="T", help="expiry: ISO 8601 time or a duration (30m, 12h, 90d)")
    p.add_argument("--note", help="what the token is for")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list the user's tokens instead")
    mode.add_argument("--revoke", type=int, metavar="ID", help="revoke token ID instead")
    sub(users, "list", cmd_user_list, "List users.")
    p = sub(users, "remove", cmd_user_remove, "Remove a user, their sessions, tokens and grants.", audit="admin.user")
    p.add_argument("name")

    groups = actions("group", "Manage groups.")
    p = sub(groups, "add", cmd_group_add, "Add a group.", audit="admin.group")
    p.add_argument("name")
    p = sub(groups, "members", cmd_group_members, "Show, add or remove a group's members.", audit="admin.group")
    p.add_argument("name")
    p.add_argument("--add", nargs="+", metavar="USER", help="users to add")
    p.add_argument("--remove", nargs="+", metavar="USER", help="users to remove")
    p = sub(
        groups,
        "import",
        cmd_group_import,
        "Add the users of a roster CSV (a 'username' column) to a group.",
        audit="admin.group",
    )
    p.add_argument("name")
    p.add_argument("roster", metavar="ROSTER.csv")
    p.add_argument(
        "--create-missing",
        action="store_true",
        help="create unknown users without a password (default: refuse the import and name them)",
    )
    sub(groups, "list", cmd_group_list, "List groups and their members.")

    when = "ISO 8601 time (2026-12-01T09:00, local unless a zone is given) or a duration from now (30m, 2h, 7d)"
    p = sub(
        commands,
        "grant",
        cmd_grant,
        "Give SUBJECT a level on PATH and everything below it (replaces SUBJECT's grant on PATH itself).",
        audit="grant.create",
    )
    p.add_argument("path", type=policy_path, metavar="PATH", help="relative to the served root; '' or / is the root")
    p.add_argument("--to", required=True, type=_subject_type("user", "group"), metavar="SUBJECT", help="user:NAME, group:NAME or authenticated")
    p.add_argument("--level", required=True, choices=list(LEVELS), metavar="LEVEL", help=f"one of {', '.join(LEVELS)}")
    p.add_argument("--not-before", type=parse_time, metavar="T", help=f"start: {when}")
    p.add_argument("--not-after", type=parse_time, metavar="T", help=f"end: {when}")
    p = sub(commands, "revoke", cmd_revoke, "Take back SUBJECT's grant on PATH itself.", audit="grant.revoke")
    p.add_argument("path", type=policy_path, metavar="PATH")
    p.add_argument("--to", required=True, type=_subject_type("user", "group", "link"), metavar="SUBJECT", help="user:NAME, group:NAME, authenticated or link:ID")
    p = sub(commands, "access", cmd_access, "Show who has what on PATH, and from which grant.")
    p.add_argument("path", type=policy_path, metavar="PATH")
    p = sub(commands, "explain", cmd_explain, "Say whether USER may do ACTION on PATH, and which grant decided.")
    p.add_argument("user", metavar="USER", help="a user name, or link:ID for a share link's guests")
    p.add_argument("action", choices=list(CAPABILITIES), metavar="ACTION", help=f"one of {', '.join(CAPABILITIES)}")
    p.add_argument("path", type=policy_path, metavar="PATH")

    links = actions("link", "Make, list and revoke anonymous share links.")
    p = sub(links, "create", cmd_link_create, "Make a share link to PATH; prints its URL path once.", audit="link.create")
    p.add_argument("path", type=policy_path, metavar="PATH")
    p.add_argument("--level", required=True, choices=list(LINK_LEVELS), help="what the link's bearer may do")
    p.add_argument("--expires", type=parse_time, metavar="T", help=f"expiry: {when}")
    p = sub(links, "revoke", cmd_link_revoke, "Revoke a share link and sign its guests out.", audit="link.revoke")
    p.add_argument("id", metavar="ID")
    p = sub(links, "list", cmd_link_list, "List share links (on PATH and below it, if given).")
    p.add_argument("path", nargs="?", type=policy_path, metavar="PATH")

    labels = actions("label", "Define labels and put them on paths.")
    p = sub(labels, "set", cmd_label_set, "Put LABEL on PATH (and so on everything below it).", audit="label.set")
    p.add_argument("path", type=policy_path, metavar="PATH")
    p.add_argument("label", metavar="LABEL")
    p = sub(labels, "remove", cmd_label_remove, "Take LABEL off PATH.", audit="label.remove")
    p.add_argument("path", type=policy_path, metavar="PATH")
    p.add_argument("label", metavar="LABEL")
    p = sub(
        labels,
        "define",
        cmd_label_define,
        "Define a label, or replace all of an existing label's settings.",
        audit="label.define",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--banner", metavar="TEXT", help="the banner shown on labelled paths")
    p.add_argument("--colour", "--color", metavar="C", help="the banner's colour, e.g. red or #b00020")
    p.add_argument("--no-links", action="store_true", help="forbid share links on labelled paths")
    p.add_argument("--only-groups", nargs="+", metavar="G", help="allow grants on labelled paths only to these groups")
    p = sub(labels, "list", cmd_label_list, "List label definitions, or the labels in force on PATH.")
    p.add_argument("path", nargs="?", type=policy_path, metavar="PATH")

    vault = actions("secrets", "Keep secrets in the vault and grant them to users' kernels.")
    p = sub(vault, "set", cmd_secrets_set, "Create secret NAME or replace its value; the value is read from "
            "standard input (prompted for, not echoed, on a terminal).", audit="secret.set")
    p.add_argument("name", metavar="NAME", help="letters, digits and _, not starting with a digit")
    p.add_argument("--owner", type=_subject_type("user", "group"), metavar="SUBJECT",
                   help="user:NAME or group:NAME; needed for a new secret")
    p = sub(vault, "grant", cmd_secrets_grant, "Let SUBJECT's kernels read secret NAME.", audit="secret.grant")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", required=True, type=_subject_type("user", "group"), metavar="SUBJECT",
                   help="user:NAME, group:NAME or authenticated")
    p = sub(vault, "revoke", cmd_secrets_revoke, "Take back SUBJECT's grant on secret NAME.", audit="secret.revoke")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", required=True, type=_subject_type("user", "group"), metavar="SUBJECT",
                   help="user:NAME, group:NAME or authenticated")
    sub(vault, "list", cmd_secrets_list, "List secrets: names, owners and grants; never values.")
    p = sub(vault, "remove", cmd_secrets_remove, "Delete secret NAME and its grants.", audit="secret.remove")
    p.add_argument("name", metavar="NAME")

    keys = actions("keys", "The key ring of sealed cells: create, grant, revoke, rotate and list keys.")
    p = sub(keys, "create", cmd_keys_create, "Create a sealing key (its version 1).", audit="key.create")
    p.add_argument("name", metavar="NAME")
    p = sub(keys, "grant", cmd_keys_grant, "Let SUBJECT use (or manage) the key NAME.", audit="key.grant")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", required=True, type=_subject_type("user", "group"), metavar="SUBJECT", help="user:NAME, group:NAME or authenticated")
    p.add_argument("--role", choices=list(ROLES), default="use", help="use (default): run, seal, unseal; manage: also grant, revoke, rotate")
    p = sub(keys, "revoke", cmd_keys_revoke, "Take back SUBJECT's use of the key NAME.", audit="key.revoke")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", required=True, type=_subject_type("user", "group"), metavar="SUBJECT", help="user:NAME, group:NAME or authenticated")
    p = sub(keys, "rotate", cmd_keys_rotate, "Give the key NAME a new current version; older cells still open.", audit="key.rotate")
    p.add_argument("name", metavar="NAME")
    sub(keys, "list", cmd_keys_list, "List sealing keys, their versions and who may use them.")

    p = sub(
        commands,
        "seal",
        cmd_seal,
        "Seal the code cells of SRC tagged TAG under key NAME and write the result to OUT "
        "(never over SRC). Cells sealed under an older version of the key are re-sealed.",
        audit="notebook.seal",
    )
    p.add_argument("src", metavar="SRC.ipynb")
    p.add_argument("-o", "--output", required=True, metavar="OUT.ipynb")
    p.add_argument("--key", required=True, metavar="NAME", help="the sealing key (see `keys list`)")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"the cell tag that marks cells to seal (default: {DEFAULT_TAG})")
    p = sub(
        commands,
        "unseal",
        cmd_unseal,
        "Write SRC with its sealed cells in clear text to OUT (mode 0600; never over SRC).",
        audit="notebook.unseal",
    )
    p.add_argument("src", metavar="SRC.ipynb")
    p.add_argument("-o", "--output", required=True, metavar="OUT.ipynb")

    audit = actions("audit", "Read, check and export the audit log.")
    p = sub(audit, "tail", cmd_audit_tail, "Print the newest audit records.")
    p.add_argument("-n", type=_positive, default=20, metavar="N", help="how many (default: 20)")
    sub(audit, "verify", cmd_audit_verify, "Check the audit log's chain; exit 1 naming the first bad record.")
    p = sub(audit, "export", cmd_audit_export, "Write audit records to standard output.")
    p.add_argument("--since", type=parse_since, metavar="T", help="only records since T: ISO 8601 time, or a duration back from now (7d)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="JSON lines (default) or CSV")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "serve":
        # Jupyter's own options (--ServerApp.x=y) pass through; argparse
        # would otherwise take them for unknown options of ours.
        if args.jupyter_args[:1] == ["--"]:
            args.jupyter_args = args.jupyter_args[1:]
        args.jupyter_args = unknown + args.jupyter_args
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except (
        Refused, AccountError, PolicyError, StoreError, VaultError,
        KeyRingError, PlaceholderError, UnsealError, MasterKeyError,
    ) as e:
        _record_refusal(args, e)
        print(f"jupyter-warden: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`audit export | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
