"""Kernel shares: which users a kernel's owner lets into their kernel.

A share lets its user run code *as the kernel's owner*. Shares live in this
server's memory next to the owner map (kernels live in this process too),
and are bound to one incarnation of the kernel: when it stops, they are gone,
even if a new kernel is later started under the same id.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from ..policy.engine import Actor


@dataclass
class _Share:
    kernel: weakref.ref  # the per-kernel manager the share was made for
    owner: str
    subjects: dict[str, str] = field(default_factory=dict)  # subject -> user name


class KernelShares:
    """Per-kernel share lists; ``on_revoke`` callbacks run when one is taken back."""

    def __init__(self, kernel_manager):
        self.kernel_manager = kernel_manager
        self._shares: dict[str, _Share] = {}
        self.on_revoke: list = []

    def _live(self, kernel_id: str) -> _Share | None:
        share = self._shares.get(kernel_id)
        if share is None:
            return None
        km = self.kernel_manager
        alive = kernel_id in km and share.kernel() is km.get_kernel(kernel_id)
        if not alive or owner_of(km, kernel_id) != share.owner:
            del self._shares[kernel_id]
            return None
        return share

    def users(self, kernel_id: str) -> list[str]:
        share = self._live(kernel_id)
        return sorted(share.subjects.values()) if share else []

    def subjects(self, kernel_id: str) -> list[str]:
        share = self._live(kernel_id)
        return sorted(share.subjects) if share else []

    def is_shared_with(self, kernel_id: str, subject: str) -> bool:
        share = self._live(kernel_id)
        return share is not None and subject in share.subjects

    def add(self, kernel_id: str, actor: Actor) -> None:
        km = self.kernel_manager
        share = self._live(kernel_id)
        if share is None:
            share = _Share(weakref.ref(km.get_kernel(kernel_id)), owner_of(km, kernel_id))
            self._shares[kernel_id] = share
        share.subjects[actor.owner] = actor.name

    def remove(self, kernel_id: str, subject: str) -> bool:
        share = self._live(kernel_id)
        if share is None or subject not in share.subjects:
            return False
        del share.subjects[subject]
        for callback in self.on_revoke:
            callback(kernel_id)
        return True

    def prune(self) -> None:
        """Forget the shares of kernels that stopped."""
        for kernel_id in list(self._shares):
            self._live(kernel_id)


def owner_of(kernel_manager, kernel_id: str) -> str | None:
    owner = getattr(kernel_manager, "owner_of", None)
    return owner(kernel_id) if owner is not None else None


def may_use_kernel(kernel_manager, actor: Actor, kernel_id: str) -> bool:
    """The kernel is the actor's own, or its owner shared it with them (admins: any)."""
    if actor.admin:
        return True
    owner = owner_of(kernel_manager, kernel_id)
    if owner is None:
        return False
    if owner == actor.owner:
        return True
    shares = getattr(kernel_manager, "warden_shares", None)
    return shares is not None and shares.is_shared_with(kernel_id, actor.owner)
