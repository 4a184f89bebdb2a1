"""The warden's HTTP API (``/api/warden/...``) and the share-link sign-in page.

``ROUTES`` is the one table of URL templates and their handlers; the
OpenAPI document (``openapi.py``) describes exactly these.
"""

from __future__ import annotations

import re

from .audit import AuditHandler
from .grants import GrantsHandler
from .kernels import KernelExitHandler, KernelSharesHandler
from .labels import LabelHandler, LabelsHandler, PathLabelsHandler
from .links import LinkHandler, LinkSignInHandler, LinksHandler
from .openapi import OpenAPIHandler
from .permissions import PermissionsHandler
from .principals import PrincipalsHandler
from .secrets import SecretGrantsHandler, SecretHandler, SecretsHandler
from .sealed import KeyGrantsHandler, KeyRotateHandler, KeysHandler, SealHandler, UnsealHandler
from .status import StatusHandler

# URL templates in OpenAPI's spelling, relative to the server's base_url.
ROUTES = [
    ("/api/warden/openapi.json", OpenAPIHandler),
    ("/api/warden/permissions", PermissionsHandler),
    ("/api/warden/status", StatusHandler),
    ("/api/warden/grants", GrantsHandler),
    ("/api/warden/principals", PrincipalsHandler),
    ("/api/warden/links", LinksHandler),
    ("/api/warden/links/{link_id}", LinkHandler),
    ("/api/warden/labels", LabelsHandler),
    ("/api/warden/labels/{name}", LabelHandler),
    ("/api/warden/path-labels", PathLabelsHandler),
    ("/api/warden/audit", AuditHandler),
    ("/api/warden/kernels/{kernel_id}/shares", KernelSharesHandler),
    ("/api/warden/kernels/{kernel_id}/exit", KernelExitHandler),
    ("/api/warden/secrets", SecretsHandler),
    ("/api/warden/secrets/{name}", SecretHandler),
    ("/api/warden/secrets/{name}/grants", SecretGrantsHandler),
    ("/api/warden/keys", KeysHandler),
    ("/api/warden/keys/{name}/grants", KeyGrantsHandler),
    ("/api/warden/keys/{name}/rotate", KeyRotateHandler),
    ("/api/warden/seal", SealHandler),
    ("/api/warden/unseal", UnsealHandler),
    ("/warden/link/{token}", LinkSignInHandler),
]


def url_pattern(template: str) -> str:
    """The tornado pattern of a template: each ``{name}`` is one path segment."""
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))


def warden_handlers() -> list[tuple[str, type]]:
    return [(url_pattern(template), handler) for template, handler in ROUTES]
