"""Keeps the warden's state folder out of the contents API.

The state folder (database, key ring, logs) may lie under the served root
by an operator's choice. Every file operation of a FileContentsManager,
and so contents, ``/view``, nbconvert and checkpoints, resolves its path
through ``_get_os_path``; refusing there covers them all. ``/files`` is
served by jupyter_server's contents-backed ``FilesHandler`` instead of the
stock static file handler, which would read the disk directly.
"""

from __future__ import annotations

import errno
import os

from jupyter_server.files.handlers import FilesHandler
from tornado.web import HTTPError
from traitlets import default


class HiddenPath(HTTPError, PermissionError):
    """A 404 to the client; EACCES to the listing code, which skips it quietly."""

    def __init__(self, path: str):
        HTTPError.__init__(self, 404, f"No such file or directory: {path}")
        self.errno = errno.EACCES


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def hiding_contents_manager(base: type, hidden_folders: list[str]) -> type:
    """A subclass of ``base`` that treats ``hidden_folders`` as absent."""
    folders = tuple(os.path.realpath(f) for f in hidden_folders)

    def _get_os_path(self, path):
        os_path = base._get_os_path(self, path)
        real = os.path.realpath(os_path)
        if any(_inside(real, folder) for folder in folders):
            raise HiddenPath(path)
        return os_path

    @default("files_handler_class")
    def _files_handler_class_default(self):
        return FilesHandler

    @default("files_handler_params")
    def _files_handler_params_default(self):
        # StaticFileHandler.initialize wants a path; FilesHandler never reads it.
        return {"path": self.root_dir}

    return type(
        "Warden" + base.__name__,
        (base,),
        {
            "_get_os_path": _get_os_path,
            "_files_handler_class_default": _files_handler_class_default,
            "_files_handler_params_default": _files_handler_params_default,
            "__module__": __name__,
            "warden_hidden": folders,
        },
    )
