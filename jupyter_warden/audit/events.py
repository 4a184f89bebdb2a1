"""Every audit action, defined once with what it means.

``AuditLog.record`` refuses a name that is not here, and the docs list
this table, so the log's vocabulary can't drift.
"""

AUDIT_EVENTS: dict[str, str] = {
    # identity
    "auth.sign_in": "A user signed in with a password.",
    "auth.sign_in_failed": "A sign-in was refused (wrong name or password).",
    "auth.throttled": "A sign-in attempt was refused because of earlier failures.",
    "auth.sign_out": "A browser session was ended.",
    "auth.link_opened": "A share link's URL signed its bearer in as a guest.",
    # requests checked by the policy engine: '<resource>.<capability>'
    "contents.read": "Read a file or folder (contents, /files, /view, nbconvert, checkpoints).",
    "contents.write": "Create, change, rename, copy to, or delete a path.",
    "contents.run": "Start or use a kernel session for a path.",
    "contents.manage": "Manage a path: share it, label it, read its audit records.",
    "server.admin": "An admin-only request (terminals, server shutdown, unknown handlers).",
    "request.denied": "A request refused before it reached the policy (unknown handler or resource).",
    # kernel channels (docs/kernels.md)
    "kernel.connect": "A kernel websocket was opened (allow) or refused before the upgrade (deny).",
    "kernel.disconnect": "The warden closed an open kernel websocket: its user lost run, the share or the sign-in.",
    "kernel.message": "A kernel message needing more than run was let through, or any message was refused "
                      "or dropped (not allowed, unknown, malformed, oversized, over the rate limit); "
                      "at most one drop record a second per connection.",
    "kernel.execute": "Code was sent to a kernel: its sha256, and its text with c.Warden.audit_code.",
    "kernel.execute_reply": "The outcome (ok, error, aborted) of an execution, from the kernel's reply.",
    "kernel.output_cut": "An execution's output passed c.Warden.kernel_max_output_bytes and was cut.",
    "kernel.share": "A kernel's owner let another user run code in it, as the owner.",
    "kernel.unshare": "A kernel share was taken back; that user's connections were closed.",
    # real-time collaboration (docs/collaboration.md)
    "document.connect": "A collaboration (document) websocket was opened, read-only or read-write.",
    "document.access": "An open document websocket turned read-only (deny) or read-write (allow) "
                       "as its user lost or gained write.",
    "document.disconnect": "The warden closed an open document websocket: its user lost read or the sign-in.",
    "document.message": "A message on a document websocket was dropped: a change or save without write, "
                        "forged awareness, or a malformed or unknown message; at most one record a second "
                        "per connection.",
    # sandboxed kernels (docs/security.md, "Sandbox")
    "kernel.start": "A kernel was started in its sandbox (uid, limits, network, whether its folder is "
                    "writable), or refused one (deny, with why).",
    "kernel.exit": "A sandboxed kernel's process ended: its exit code and cause (shutdown, restart, "
                   "max-age, cpu-limit, file-size-limit, killed, crashed, exited).",
    # policy changes
    "grant.create": "A grant was made or changed.",
    "grant.revoke": "A grant was taken back.",
    "link.create": "A share link was made.",
    "link.revoke": "A share link was revoked.",
    "label.define": "A label's banner or rules were defined or changed.",
    "label.set": "A label was put on a path.",
    "label.remove": "A label was taken off a path.",
    # administration
    "admin.user": "An account was added, removed, or had its password, admin flag or tokens changed.",
    "admin.group": "A group was added, or its members changed.",
}


def check_event(action: str) -> str:
    if action not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit action {action!r}; add it to audit/events.py")
    return action
