"""Runs inside Python kernels: the purge that follows every sealed cell (docs/sealed-cells.md).

The first statement of every sealed cell calls ``arm()``: IPython has already
put the cell in linecache, and ``arm()`` notes what linecache held, then
registers a one-shot post_run_cell hook (ipykernel fires it in a finally,
after the error output and before the execute_reply) that drops every cell
entry added since, the stack_data/executing caches of those files, the
exception IPython keeps for %tb/%debug and the raw cell kept as
last_execution_result.

A kernel that can import jupyter_warden (the server's own Python, and every
sandboxed kernel: the package is bound into the sandbox) imports this module
by name, from a short first line. Any other Python kernel gets this file's
text in the first line of its first sealed cell, and runs it as the module
``_jupyter_warden_sealed`` (jupyter_warden.sealed.execution). Either way the
module is registered under that name, and imports nothing of the server.
"""

import linecache
import sys
import types

from IPython import get_ipython

HELPER = "_jupyter_warden_sealed"


def arm(cell):
    ip = get_ipython()
    before = dict(linecache.cache)
    last = sys.__dict__.get("last_value")

    def purge(result=None):
        try:
            ip.events.unregister("post_run_cell", purge)
        except ValueError:
            pass
        names = getattr(ip.compile, "_filename_map", {})
        gone = {cell} | {k for k, v in list(linecache.cache.items())
                         if before.get(k) is not v and (k in names or k.startswith("<"))}
        for name in gone:
            linecache.cache.pop(name, None)
            names.pop(name, None)
        try:
            import executing
            classes = [executing.Source]
            while classes:
                cls = classes.pop()
                classes.extend(cls.__subclasses__())
                by_lines = cls.__dict__.get("__source_cache_with_lines") or {}
                for key in [k for k in by_lines if k[0] in gone]:
                    del by_lines[key]
                by_code = cls.__dict__.get("__executing_cache") or {}
                for key in [k for k in by_code if getattr(k[0], "co_filename", None) in gone]:
                    del by_code[key]
        except Exception:
            pass
        if sys.__dict__.get("last_value") is not last:
            for name in ("last_type", "last_value", "last_traceback", "last_exc"):
                sys.__dict__.pop(name, None)
        ip._last_traceback = None
        info = getattr(result, "info", None)
        if info is not None:
            info.raw_cell = info.transformed_cell = ""

    ip.events.register("post_run_cell", purge)


if __name__ == HELPER:  # run from its text: no package to import it from again
    module = types.ModuleType(HELPER)
    module.arm = arm
    sys.modules[HELPER] = module
else:
    sys.modules.setdefault(HELPER, sys.modules[__name__])
