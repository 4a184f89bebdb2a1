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
SECRET_NAME = {"name": "name", "in": "path", "required": True,
               "description": "The secret's name: letters, digits and _, not starting with a digit.",
               "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"}}
KEY_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The sealing key's name."}
_SCHEMAS = {
    "Secret": {
        "type": "object",
        "description": "What may be shown of a secret. Never its value.",
        "properties": {
            "name": {"type": "string"},
            "owner": {"type": "string", "description": "user:KEY or group:KEY"},
            "grants": {"type": "array", "items": {"type": "string"}, "nullable": True,
                       "description": "Subjects it is granted to; null when you may read it but not manage it."},
            "created_by": {"type": "string", "nullable": True},
            "created": {"type": "string", "format": "date-time"},
            "updated": {"type": "string", "format": "date-time"},
            "manageable": {"type": "boolean", "description": "You may replace, grant, revoke and delete it."},
        },
        "required": ["name", "owner", "manageable"],
    },
    "SecretList": {
        "type": "object",
        "properties": {"secrets": {"type": "array", "items": _ref("Secret")}},
        "required": ["secrets"],
    },
    "SecretValue": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "value": {"type": "string", "minLength": 1, "description": "Up to 64 KiB of UTF-8. Never returned."},
            "owner": {"type": "string", "description": "user:NAME or group:NAME; default: the secret's "
                      "current owner, or you for a new secret. Yourself or a group you are in, unless admin."},
        },
        "required": ["value"],
    },
    "SecretGrantSubject": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"subject": {"type": "string", "description": "user:NAME, group:NAME or authenticated"}},
        "required": ["subject"],
    },
    "Principals": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "users": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "display_name": {"type": "string"}}}},
            "groups": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}}}},
        },
        "required": ["users", "groups"],
    },
    "Key": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "current_version": {"type": "integer", "description": "The version new seals use."},
            "versions": {"type": "array", "items": {"type": "integer"}},
            "created": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string", "nullable": True},
            "grants": {
                "type": "array", "nullable": True,
                "description": "Who may use or manage it; null unless you manage the key.",
                "items": {"type": "object", "properties": {
                    "subject": {"type": "string", "description": "user:KEY, group:KEY or authenticated"},
                    "role": {"type": "string", "enum": ["use", "manage"]}}},
            },
        },
        "required": ["name", "current_version", "versions"],
    },
    "NewKey": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    },
    "NewKeyGrant": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "subject": {"type": "string", "description": "user:NAME, group:NAME or authenticated"},
            "role": {"type": "string", "enum": ["use", "manage"], "description": "Default: use."},
        },
        "required": ["subject"],
    },
    "SealRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "description": "A notebook, relative to the server root."},
            "key": {"type": "string"},
            "tag": {"type": "string", "description": "Seal the code cells tagged so (default: sealed)."},
        },
        "required": ["path", "key"],
    },
    "SealResult": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "key": {"type": "string"},
            "sealed": {"type": "array", "items": {"type": "string"}, "description": "Cell ids sealed now."},
            "resealed": {"type": "array", "items": {"type": "string"},
                         "description": "Cell ids re-sealed under the key's current version."},
            "unchanged": {"type": "array", "items": {"type": "string"}},
            "history_purged": {"type": "integer", "description": "Stored Y updates deleted."},
        },
    },
    "UnsealRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
    "UnsealResult": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "unsealed": {"type": "array", "items": {"type": "string"}}},
    },
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
            "owner": {"type": "string",
                      "description": "The owner: user:KEY, or link:ID/guest:N for one bearer of a share link"},
            "users": {"type": "array", "items": {"type": "string"}},
            "warning": {"type": "string", "description": "On POST: what the share lets the user do."},
        },
        "required": ["kernel", "owner", "users"],
    },
    "KernelExit": {
        "type": "object",
        "properties": {
            "kernel": {"type": "string"},
            "cause": {"type": "string", "description": "cpu-limit, file-size-limit, crashed (possibly the "
                      "memory limit), killed, max-age, idle, access-lost, terminated, or 'exited with status N'"},
            "message": {"type": "string", "description": "The sentence shown to the kernel's clients."},
            "exit_code": {"type": "integer", "nullable": True},
            "at": {"type": "string", "format": "date-time"},
        },
        "required": ["kernel", "cause", "message", "exit_code", "at"],
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
    "/api/warden/principals": {
        "get": {
            "summary": "Users and groups to share with, for the share dialog's completion. Needs manage on the path.",
            "parameters": [
                PATH_PARAM,
                _query("q", "Only names containing this text (case-insensitive); at most 50 of each."),
            ],
            "responses": {
                "200": _json(_ref("Principals"), "Matching users and groups."),
                "400": E400, "403": E403, "404": E404,
            },
        }
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
    "/api/warden/kernels/{kernel_id}/exit": {
        "get": {
            "summary": "Why a sandboxed kernel last died or was stopped (a limit, its maximum age, lost access).",
            "description": "For the kernel's owner, users it was shared with, and admins; kept in the "
                           "server's memory for the last 1000 such ends. Ends the user asked for "
                           "(shutdown, restart) are not kept.",
            "parameters": [KERNEL_ID],
            "responses": {"200": _json(_ref("KernelExit"), "The last end."), "404": E404},
        }
    },
    "/api/warden/secrets": {
        "get": {
            "summary": "The secrets you manage (with their grants) or may read in your kernels: names, never values.",
            "responses": {"200": _json(_ref("SecretList"), "The secrets.")},
        },
    },
    "/api/warden/secrets/{name}": {
        "put": {
            "summary": "Create a secret, or replace its value. Write-only: the value is never returned.",
            "description": "Its owner, a member of an owning group, or an admin. Names are server-wide. "
                           "Audited (secret.set), without the value.",
            "parameters": [SECRET_NAME],
            "requestBody": _body("SecretValue"),
            "responses": {
                "201": _json(_ref("Secret"), "Created."),
                "200": _json(_ref("Secret"), "Replaced."),
                "400": E400,
                "409": _error("The name belongs to a secret you don't manage."),
            },
        },
        "delete": {
            "summary": "Delete a secret and its grants. Audited (secret.remove).",
            "parameters": [SECRET_NAME],
            "responses": {"204": NO_CONTENT, "404": _error("No secret of that name that you manage.")},
        },
    },
    "/api/warden/secrets/{name}/grants": {
        "post": {
            "summary": "Let a user or group read the secret in their kernels. Audited (secret.grant).",
            "parameters": [SECRET_NAME],
            "requestBody": _body("SecretGrantSubject"),
            "responses": {"200": _json(_ref("Secret"), "Granted."), "400": E400,
                          "404": _error("No secret of that name that you manage.")},
        },
        "delete": {
            "summary": "Take a grant back; the next read by a kernel is refused. Audited (secret.revoke).",
            "parameters": [SECRET_NAME, _query("subject", "user:NAME, group:NAME or authenticated", required=True)],
            "responses": {"204": NO_CONTENT, "400": E400,
                          "404": _error("No secret of that name that you manage.")},
        },
    },
    "/api/warden/keys": {
        "get": {
            "summary": "Sealing keys you may use or manage (admins: all). Grants only for keys you manage.",
            "responses": {"200": _json({"type": "object", "properties": {"keys": {
                "type": "array", "items": _ref("Key")}}}, "The keys.")},
        },
        "post": {
            "summary": "Create a sealing key (version 1). Admins only.",
            "requestBody": _body("NewKey"),
            "responses": {"201": _json(_ref("Key"), "The key."), "400": E400,
                          "409": _error("A key of that name exists.")},
        },
    },
    "/api/warden/keys/{name}/grants": {
        "post": {
            "summary": "Let a subject use (or manage) the key. The key's managers or an admin.",
            "parameters": [KEY_NAME],
            "requestBody": _body("NewKeyGrant"),
            "responses": {"201": _json(_ref("Key"), "The key, with its grants."), "400": E400},
        },
        "delete": {
            "summary": "Take back a subject's use of the key; their next sealed run is refused.",
            "parameters": [KEY_NAME, _query("subject", "user:NAME, group:NAME or authenticated", True)],
            "responses": {"204": NO_CONTENT, "400": E400, "404": E404},
        },
    },
    "/api/warden/keys/{name}/rotate": {
        "post": {
            "summary": "Give the key a new current version; cells sealed before still open. Managers or admins.",
            "parameters": [KEY_NAME],
            "requestBody": {"required": False, "description": "None, or an empty object.",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json(_ref("Key"), "The key."), "404": E404},
        }
    },
    "/api/warden/seal": {
        "post": {
            "summary": "Seal a notebook's tagged cells in place. Needs manage on it and use of the key.",
            "description": "Refused (409) while a real-time collaboration room holds the notebook. "
                           "Audited first (notebook.seal); then the notebook's stored Y history and its "
                           "checkpoints are deleted, so no clear text outlives the sealing, and the sealed "
                           "notebook replaces it in one rename. Cells sealed under an older key "
                           "version are re-sealed under the current one.",
            "requestBody": _body("SealRequest"),
            "responses": {
                "200": _json(_ref("SealResult"), "What was sealed."),
                "400": E400, "404": E404,
                "409": _error("A room is open on the notebook, or a sealed cell does not open."),
                "507": _error("The disk is full; the notebook is unchanged."),
            },
        }
    },
    "/api/warden/unseal": {
        "post": {
            "summary": "Put a notebook's sealed cells back in clear text, in place. Needs manage and use of "
                       "every key.",
            "description": "Refused (409) while anyone without manage may read the notebook, or a room "
                           "holds it. Audited (notebook.unseal).",
            "requestBody": _body("UnsealRequest"),
            "responses": {
                "200": _json(_ref("UnsealResult"), "The cells unsealed."),
                "400": E400, "404": E404,
                "409": _error("Readers without manage, an open room, or a cell that does not open."),
                "507": _error("The disk is full; the notebook is unchanged."),
            },
        }
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
        "description": "Grants, share links, labels, kernel shares, secrets (write-only), effective permissions and audit queries. "
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
