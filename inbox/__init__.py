"""Domain core and storage: addresses, the normalised message, tables and the store."""

from inbox.addresses import (
    E164,
    Address,
    EmailAddress,
    SenderId,
    is_email,
    parse_address,
    parse_email,
    parse_phone,
    parse_sms_sender,
)
from inbox.blobs import BlobStore, DirectoryBlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database, open_database
from inbox.errors import (
    AddressError,
    Conflict,
    InboxError,
    NotFound,
    StoreUnavailable,
    WriterClosed,
)
from inbox.message import (
    AttachmentStatus,
    AuthResult,
    Channel,
    Folder,
    Inbound,
    InboundAttachment,
    IngestResult,
    Outcome,
    SenderAuth,
    Verdict,
)

__all__ = [
    "E164",
    "Address",
    "AddressError",
    "AttachmentStatus",
    "AuthResult",
    "BlobStore",
    "Channel",
    "Conflict",
    "Database",
    "DirectoryBlobStore",
    "EmailAddress",
    "Folder",
    "GroupCommitter",
    "Inbound",
    "InboundAttachment",
    "InboxError",
    "IngestResult",
    "NotFound",
    "Outcome",
    "SenderAuth",
    "SenderId",
    "StoreUnavailable",
    "Verdict",
    "WriterClosed",
    "is_email",
    "open_database",
    "parse_address",
    "parse_email",
    "parse_phone",
    "parse_sms_sender",
]
