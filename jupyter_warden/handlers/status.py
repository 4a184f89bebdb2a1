"""``GET /api/warden/status``: which of the guarantees that depend on the host hold on this server (G4-G6).

Any signed-in user may ask: a user deciding what to put in a notebook should
know whether other users' kernels can read it.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import WardenAPIHandler


class StatusHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        sandboxed = self.warden.sandbox_runner is not None
        no_sandbox = "kernels are not sandboxed (c.Warden.sandbox = 'none'): they run as the server's account"
        self.reply({
            "sandbox": self.warden.sandbox,
            "guarantees": {
                "G4": {"holds": sandboxed, "reason": "each kernel runs in bubblewrap under its user's uid"
                       if sandboxed else no_sandbox},
                "G5": {"holds": False, "reason": "sealed cells are not implemented yet"
                       if sandboxed else no_sandbox},
                # The vault hands secrets only to sandboxed kernels (docs/secrets.md).
                "G6": {"holds": sandboxed, "reason": "secrets reach kernels over each kernel's own socket, "
                       "masked in outputs" if sandboxed else no_sandbox + "; they get no secrets"},
            },
        })
