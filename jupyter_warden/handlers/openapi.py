"""The OpenAPI 3 document of the warden's HTTP API, kept here and nowhere else.

``/api/warden/openapi.json`` serves it; a test checks that every route the
extension registers is described here, and that nothing else is.
"""

from __future__ import annotations

import copy

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import __version__
from ..policy.levels import CAPABILITIES, LEVELS, LINK_LEVELS
from .base import WardenAPIHandler


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _query(name: str, description: str, required: bool = False, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _body(schema_name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


PATH_PARAM = _query("path", "A path relative to the server root; '' is the root.", required=True)
OPTIONAL_PATH = _query("path", "A path relative to the server root; the root if left out.")
E400 = _error("Bad input: the message says which field and why.")
E403 = _error("Signed in, but not allowed: the message names the capability needed.")
E404 = _error("Not found, or not readable by you (the two are not told apart).")
E409 = _error("The policy refuses the change, e.g. a label forbids it; the message names the label.")
KERNEL_ID = {"name": "kernel_id", "in": "path", "required": True, "schema": {"type": "string"}}
NO_CONTENT = {"description": "Done; no content."}

_time = {"type": "string", "format": "date-time", "nullable": True}
_SCHEMAS = {
    "KernelShareUser": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"user": {"type": "string"}},
        "required": ["user"],
    },
    "KernelShares": {
        "type": "object",
        "properties": {
            "kernel": {"type": "string"},
            "owner": {"type": "string", "description": "The owner's subject, user:KEY"},
            "users": {"type": "array", "items": {"type": "string"}},
            "warning": {"type": "string", "description": "On POST: what the share lets the user do."},
        },
        "required": ["kernel", "owner", "users"],
    },
    "Status": {
        "type": "object",
        "properties": {
            "sandbox": {"type": "string", "enum": ["bubblewrap", "none"]},
            "guarantees": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"holds": {"type": "boolean"}, "reason": {"type": "string"}},
                },
            },
        },
    },
    "Error": {
        "type": "object",
        "properties": {"message": {"type": "string"}, "reason": {"type": "string", "nullable": True}},
        "required": ["message"],
    },
    "Grant": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "path": {"type": "string"},
            "subject": {"type": "string", "description": "user:KEY, group:KEY, authenticated or link:ID"},
            "level": {"type": "string", "enum": list(LEVELS)},
            "not_before": _time,
            "not_after": _time,
            "inherited": {"type": "boolean", "description": "Set on a folder above the asked path."},
        },
        "required": ["id", "path", "subject", "level"],
    },
    "NewGrant": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string"},
            "subject": {"type": "string", "description": "user:NAME, group:NAME or authenticated"},
            "level": {"type": "string", "enum": list(LEVELS)},
            "not_before": {"type": "string", "format": "date-time", "description": "ISO 8601 with a zone"},
            "not_after": {"type": "string", "format": "date-time", "description": "ISO 8601 with a zone"},
        },
        "required": ["path", "subject", "level"],
    },
    "Label": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "banner": {"type": "string", "nullable": True},
            "colour": {"type": "string", "nullable": True},
            "no_links": {"type": "boolean"},
            "only_groups": {"type": "array", "items": {"type": "string"}},
            "path": {"type": "string", "nullable": True, "description": "Where it is set (labels on a path)."},
        },
        "required": ["name", "no_links", "only_groups"],
    },
    "LabelDefinition": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "banner": {"type": "string", "maxLength": 200},
            "colour": {"type": "string", "pattern": "^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,30})$"},
            "no_links": {"type": "boolean"},
            "only_groups": {"type": "array", "items": {"type": "string"}},
        },
    },
    "PathLabel": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"path": {"type": "string"}, "label": {"type": "string"}},
        "required": ["path", "label"],
    },
    "Permissions": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "admin": {"type": "boolean"},
                    "guest": {"type": "boolean"},
                },
            },
            "capabilities": {"type": "array", "items": {"type": "string", "enum": list(CAPABILITIES)}},
            "level": {"type": "string", "enum": list(LEVELS)},
            "reason": {"type": "string"},
            "grants": {"type": "array", "items": _ref("Grant")},
            "labels": {"type": "array", "items": _ref("Label")},
        },
        "required": ["path", "capabilities", "level", "reason", "grants", "labels"],
    },
    "Link": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "path": {"type": "string"},
            "level": {"type": "string", "enum": list(LINK_LEVELS)},
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
            "expires_at": _time,
            "revoked_at": _time,
            "created_by": {"type": "string", "nullable": True},
            "created": {"type": "string", "format": "date-time"},
        },
        "required": ["id", "path", "level", "state"],
    },
    "NewLink": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string"},
            "level": {"type": "string", "enum": list(LINK_LEVELS)},
            "expires": {"type": "string", "format": "date-time", "description": "ISO 8601 with a zone"},
        },
        "required": ["path", "level"],
    },
    "CreatedLink": {
        "allOf": [
            _ref("Link"),
            {
                "type": "object",
                "properties": {
                    "token": {"type": "string", "description": "Shown this once; stored only hashed."},
                    "url": {"type": "string", "description": "The URL to hand out."},
                },
                "required": ["token", "url"],
            },
        ]
    },
    "AuditRecord": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "time": {"type": "string", "format": "date-time"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "path": {"type": "string", "nullable": True},
            "outcome": {"type": "string"},
            "reason": {"type": "string", "nullable": True},
            "grant_id": {"type": "integer", "nullable": True},
            "client": {"type": "string", "nullable": True},
            "details": {"type": "object", "nullable": True},
        },
        "required": ["seq", "time", "actor", "action", "outcome"],
    },
}


def _list_of(key: str, item: str) -> dict:
    return {
        "type": "object",
        "properties": {"path": {"type": "string"}, key: {"type": "array", "items": _ref(item)}},
        "required": [key],
    }


_PATHS = {
    "/api/warden/openapi.json": {
        "get": {
            "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3 document.", "content": {"application/json": {}}}},
        }
    },
    "/api/warden/permissions": {
        "get": {
            "summary": "Your capabilities on a path, the reason, the deciding grants and the labels in force.",
            "description": "Any signed-in user or guest. A path you can't read (existing or not) "
            "gets capabilities [] and level none, with no grants or labels.",
            "parameters": [PATH_PARAM],
            "responses": {"200": _json(_ref("Permissions"), "Your access."), "400": E400},
        }
    },
    "/api/warden/status": {
        "get": {
            "summary": "Which host-dependent guarantees hold here (G4 sandboxed kernels, G5 sealed cells), and why.",
            "description": "Any signed-in user or guest.",
            "responses": {"200": _json(_ref("Status"), "The server's status.")},
        }
    },
    "/api/warden/grants": {
        "get": {
            "summary": "Grants on a path and the folders above it. Needs manage on the path.",
            "parameters": [PATH_PARAM],
            "responses": {
                "200": _json(_list_of("grants", "Grant"), "The grants, most specific first."),
                "400": E400, "403": E403, "404": E404,
            },
        },
        "post": {
            "summary": "Make or replace the grant of a subject on a path. Needs manage on the path.",
            "requestBody": _body("NewGrant"),
            "responses": {
                "201": _json(_ref("Grant"), "The grant."),
                "400": E400, "403": E403, "404": E404, "409": E409,
            },
        },
        "delete": {
            "summary": "Take back a subject's grant on the path itself. Needs manage on the path.",
            "parameters": [PATH_PARAM, _query("subject", "user:NAME, group:NAME, authenticated or link:ID", True)],
            "responses": {"204": NO_CONTENT, "400": E400, "403": E403, "404": E404},
        },
    },
    "/api/warden/links": {
        "get": {
            "summary": "Share links on a path and below it (never their tokens). Needs manage on the path.",
            "parameters": [OPTIONAL_PATH],
            "responses": {
                "200": _json(_list_of("links", "Link"), "The links."),
                "400": E400, "403": E403, "404": E404,
            },
        },
        "post": {
            "summary": "Make a share link (read or read-run). Needs manage on the path.",
            "requestBody": _body("NewLink"),
            "responses": {
                "201": _json(_ref("CreatedLink"), "The link, with its token and URL (shown once)."),
                "400": E400, "403": E403, "404": E404, "409": E409,
            },
        },
    },
    "/api/warden/links/{link_id}": {
        "delete": {
            "summary": "Revoke a share link; its guests lose access at once. Needs manage on its path.",
            "parameters": [
                {"name": "link_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"204": NO_CONTENT, "403": E403, "404": E404},
        }
    },
    "/api/warden/labels": {
        "get": {
            "summary": "Every label definition. Any signed-in user.",
            "responses": {"200": _json({"type": "object", "properties": {"labels": {
                "type": "array", "items": _ref("Label")}}}, "The labels.")},
        }
    },
    "/api/warden/labels/{name}": {
        "put": {
            "summary": "Define or change a label. Admins only.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": _body("LabelDefinition"),
            "responses": {
                "200": _json(_ref("Label"), "The label."), "400": E400, "403": E403, "409": E409,
            },
        }
    },
    "/api/warden/path-labels": {
        "get": {
            "summary": "Labels in force on a path (its own and its folders'). Needs read.",
            "parameters": [PATH_PARAM],
            "responses": {"200": _json(_list_of("labels", "Label"), "The labels."), "400": E400, "404": E404},
        },
        "post": {
            "summary": "Put a label on a path. Needs manage on the path.",
            "requestBody": _body("PathLabel"),
            "responses": {
                "201": _json(_ref("Label"), "The label, with the path."),
                "400": E400, "403": E403, "404": E404, "409": E409,
            },
        },
        "delete": {
            "summary": "Take a label off a path (only where it is set). Needs manage on the path.",
            "parameters": [PATH_PARAM, _query("label", "The label's name.", True)],
            "responses": {"204": NO_CONTENT, "400": E400, "403": E403, "404": E404},
        },
    },
    "/api/warden/audit": {
        "get": {
            "summary": "Audit records, newest last. Admins: all; managers: records of paths they manage.",
            "parameters": [
                OPTIONAL_PATH,
                _query("since", "Only records at or after this ISO 8601 time (with a zone).",
                       schema={"type": "string", "format": "date-time"}),
                _query("actor", "Only records of this actor."),
                _query("limit", "At most this many of the newest records (default 100).",
                       schema={"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            "responses": {
                "200": _json(_list_of("records", "AuditRecord"), "The records."),
                "400": E400, "403": E403, "404": E404,
            },
        }
    },
    "/api/warden/kernels/{kernel_id}/shares": {
        "get": {
            "summary": "Who a kernel is shared with. The kernel's owner or an admin.",
            "parameters": [KERNEL_ID],
            "responses": {"200": _json(_ref("KernelShares"), "The shares."), "404": E404},
        },
        "post": {
            "summary": "Let a user run code in this kernel AS ITS OWNER. The kernel's owner or an admin.",
            "description": "The user must have read-write-run on every notebook the kernel runs for. "
                           "They can then run any code as the owner: read and change everything the "
                           "kernel can reach, and see its variables. Audited (kernel.share).",
            "parameters": [KERNEL_ID],
            "requestBody": _body("KernelShareUser"),
            "responses": {
                "201": _json(_ref("KernelShares"), "Shared; `warning` says what it allows."),
                "400": E400, "404": E404,
                "409": _error("The user lacks read-write-run on a notebook of the kernel."),
            },
        },
        "delete": {
            "summary": "Take a share back; the user's open connections to the kernel close at once.",
            "parameters": [KERNEL_ID, _query("user", "The user's name (or a JSON body {\"user\": NAME}).")],
            "responses": {"204": NO_CONTENT, "400": E400, "404": E404},
        },
    },
    "/warden/link/{token}": {
        "get": {
            "summary": "Open a share link: sign in as its guest and go to the notebook in JupyterLab.",
            "description": "No sign-in needed. A signed-in user keeps their own session.",
            "security": [],
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "302": {"description": "Signed in as the link's guest; redirected to lab/tree/PATH."},
                "404": {"description": "Unknown, revoked or expired link (an HTML page).",
                        "content": {"text/html": {"schema": {"type": "string"}}}},
            },
        }
    },
}

# Every API operation answers 403 to a request with no valid sign-in.
for _path, _ops in _PATHS.items():
    for _op in _ops.values():
        if _op.get("security") != []:
            _op["responses"].setdefault("403", E403)

OPENAPI = {
    "openapi": "3.0.3",
    "info": {
        "title": "jupyter-warden",
        "version": __version__,
        "description": "Grants, share links, labels, effective permissions and audit queries. "
        "Send `Authorization: token <api token>`, or the sign-in cookie with an `X-XSRFToken` header.",
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "`token <api token>` (from `jupyter-warden user token NAME`)"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "warden-session-HOST"},
        },
    },
    "security": [{"token": []}, {"cookie": []}],
    "paths": _PATHS,
}


def openapi_document(base_url: str = "/") -> dict:
    document = copy.deepcopy(OPENAPI)
    document["servers"] = [{"url": base_url.rstrip("/") or "/"}]
    return document


class OpenAPIHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        self.reply(openapi_document(self.base_url))
