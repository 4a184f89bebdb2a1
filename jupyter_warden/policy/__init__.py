"""The policy model: levels, grants, labels, share links, and the one engine that decides.

Every enforcement point asks ``PolicyEngine.check(actor, capability, path)``
and gets a ``Decision`` with its reason; ``Policy`` is how grants, labels
and links are changed.
"""

from .engine import Actor, Decision, PolicyEngine
from .paths import normalize_path

__all__ = ["Actor", "Decision", "PolicyEngine", "normalize_path"]
