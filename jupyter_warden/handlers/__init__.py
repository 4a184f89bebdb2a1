"""The warden's HTTP API (``/api/warden/...``) and the share-link sign-in page.

``ROUTES`` is the one table of URL templates and their handlers; the
OpenAPI document (``openapi.py``) describes exactly these.
"""

from __future__ import annotations

import re

from .audit import AuditHandler
from .grants import GrantsHandler
from .kernels import KernelSharesHandler
from .labels import LabelHandler, LabelsHandler, PathLabelsHandler
from .links import LinkHandler, LinkSignInHandler, LinksHandler
from .openapi import OpenAPIHandler
from .permissions import PermissionsHandler
from .status import StatusHandler

# URL templates in OpenAPI's spelling, relative to the server's base_url.
ROUTES = [
    ("/api/warden/openapi.json", OpenAPIHandler),
    ("/api/warden/permissions", PermissionsHandler),
    ("/api/warden/status", StatusHandler),
    ("/api/warden/grants", GrantsHandler),
    ("/api/warden/links", LinksHandler),
    ("/api/warden/links/{link_id}", LinkHandler),
    ("/api/warden/labels", LabelsHandler),
    ("/api/warden/labels/{name}", LabelHandler),
    ("/api/warden/path-labels", PathLabelsHandler),
    ("/api/warden/audit", AuditHandler),
    ("/api/warden/kernels/{kernel_id}/shares", KernelSharesHandler),
    ("/warden/link/{token}", LinkSignInHandler),
]


def url_pattern(template: str) -> str:
    """The tornado pattern of a template: each ``{name}`` is one path segment."""
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))


def warden_handlers() -> list[tuple[str, type]]:
    return [(url_pattern(template), handler) for template, handler in ROUTES]
