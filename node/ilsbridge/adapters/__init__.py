"""ILS adapters: Koha (offline-circulation service + REST) and SIP2, behind one protocol."""

from node.ilsbridge.adapters.base import (
    AdapterUnsupported,
    Credentials,
    CredentialsError,
    IlsAdapter,
    IlsUnavailable,
    SnapshotKind,
    SnapshotUnsupported,
    load_credentials,
    make_adapter,
)

__all__ = [
    "AdapterUnsupported",
    "Credentials",
    "CredentialsError",
    "IlsAdapter",
    "IlsUnavailable",
    "SnapshotKind",
    "SnapshotUnsupported",
    "load_credentials",
    "make_adapter",
]
