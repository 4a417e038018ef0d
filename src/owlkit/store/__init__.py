"""The content-addressed store: blobs by sha256, a SQL catalog of manifests, tags and lineage edges.

This package knows nothing of torch; importing it stays cheap so read commands start fast.
"""

from owlkit.store.store import Store, open_store

__all__ = ["Store", "open_store"]
