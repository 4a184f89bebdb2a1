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
    "auth.hub_sync": "A JupyterHub user's account was created, or its admin flag or hub group "
                     "memberships changed, to match the hub (docs/jupyterhub.md).",
    # requests checked by the policy engine: '<resource>.<capability>'
    "contents.read": "Read a file or folder (contents, /files, /view, nbconvert, checkpoints).",
    "contents.write": "Create, change, rename, copy to, or delete a path.",
    "contents.run": "Start or use a kernel session for a path.",
    "contents.manage": "Manage a path: share it, label it, read its audit records.",
    "server.admin": "An admin-only request (terminals, server shutdown, unknown handlers).",
    "request.denied": "A request refused before it reached the policy (unknown handler or resource).",
    # kernel channels (docs/kernels.md)
    "kernel.connect": "A kernel websocket was opened (allow) or refused before the upgrade (deny).",
    "kernel.disconnect": "The warden closed an open kernel websocket: its user lost run, the share or the "
                         "sign-in, or its client stopped reading (deny); or its kernel was stopped for "
                         "good, by max age, idle cull or lost access (allow, with why).",
    "kernel.message": "A kernel message needing more than run was let through, or any message was refused "
                      "or dropped (not allowed, unknown, malformed, oversized, over the rate limit); "
                      "at most one drop record a second per connection.",
    "kernel.execute": "Code was sent to a kernel: its sha256, and its text with c.Warden.audit_code; for a "
                      "sealed cell, those of its placeholder, and the key, key version and cell id that "
                      "opened it (details.sealed).",
    "kernel.execute_reply": "The outcome (ok, error, aborted) of an execution, from the kernel's reply; "
                            "lost when the kernel died before replying (the client gets an error reply); "
                            "aborted, naming who, when it was restarted or shut down on request before replying.",
    "kernel.output_cut": "An execution's output passed c.Warden.kernel_max_output_bytes and was cut.",
    "kernel.output_dropped": "A kernel websocket's client was not reading: output was dropped while more "
                             "than c.Warden.kernel_max_send_buffer_bytes waited to be sent to it.",
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
    "kernel.start": "A kernel was started in its sandbox (uid, limits and its cgroup's, network, whether its "
                    "folder is writable), or refused one (deny, with why).",
    "kernel.lost": "A pool kernel was lost (the gateway restarted it on its own, or gave it up: its host "
                   "stopped answering); its users were told to restart it (docs/pool.md).",
    "kernel.exit": "A sandboxed kernel's process ended: its exit code and cause (shutdown, restart, "
                   "max-age, idle, access-lost, cpu-limit, memory-limit, file-size-limit, killed, crashed, "
                   "terminated, exited).",
    # the secrets vault (docs/secrets.md); values are never recorded
    "secret.set": "A secret was created or its value replaced (its name and owner; never the value).",
    "secret.grant": "A secret was granted to a user or group.",
    "secret.revoke": "A secret's grant was taken back; the next read by a kernel is refused.",
    "secret.remove": "A secret was deleted from the vault.",
    "secret.read": "A kernel asked for a secret: who, which kernel, which notebook, which secret; "
                   "allowed, or denied with why.",
    "secret.buffer_removed": "A binary buffer of a kernel's message (a widget's, a comm's) held a value "
                             "handed to that kernel and was replaced by an empty one (never the value); "
                             "at most one record a second per connection.",
    # policy changes
    "grant.create": "A grant was made or changed.",
    "grant.revoke": "A grant was taken back.",
    "link.create": "A share link was made.",
    "link.revoke": "A share link was revoked.",
    "label.define": "A label's banner or rules were defined or changed.",
    "label.set": "A label was put on a path.",
    "label.remove": "A label was taken off a path.",
    # sealed cells and their key ring (docs/sealed-cells.md)
    "key.create": "A sealing key was made in the key ring.",
    "key.grant": "A subject was let use (or manage) a sealing key.",
    "key.revoke": "A subject's use of a sealing key was taken back.",
    "key.rotate": "A sealing key got a new current version; older versions stay to open older cells.",
    "notebook.seal": "A notebook's tagged cells were sealed (or re-sealed under a key's new version).",
    "notebook.unseal": "A notebook's sealed cells were put back in clear text.",
    "sealed.refuse": "A sealed cell was not run: no use of its key, no run on the notebook, or a "
                     "malformed, altered or moved placeholder.",
    # administration
    "admin.user": "An account was added, removed, or had its password, admin flag or tokens changed.",
    "admin.group": "A group was added, or its members changed.",
}


def check_event(action: str) -> str:
    if action not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit action {action!r}; add it to audit/events.py")
    return action
