"""The audit trail: an append-only, HMAC-chained log in the state store.

Each record carries the hash of the one before and is keyed with a secret
kept in the state folder (``audit.key``), so editing, deleting or
reordering records in the database is detected by ``verify`` even by
someone who can write the database but not read the state folder.
"""

from .log import AuditLog, AuditRecordView, VerifyResult

__all__ = ["AuditLog", "AuditRecordView", "VerifyResult"]
