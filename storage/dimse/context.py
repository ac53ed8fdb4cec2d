"""What the DICOM services need of the node, as a Protocol: storage/node.py's Node provides it, unimported."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig
    from storage.index.database import Index
    from storage.pools.ingest import Ingestor
    from storage.pools.placement import Placement
    from storage.pools.pool import Pool

    from .associations import AssociationLog


class NodeContext(Protocol):
    """The one context object handed to every handler (STYLE.md, principle 3), seen from the network side."""

    config: NodeConfig
    index: Index
    pools: list[Pool]
    placement: Placement
    ingestor: Ingestor | None  # set once the node serves (after any fork)
    associations: AssociationLog

    def may(self, calling_ae: str, operation: str) -> bool:
        """May this calling AE use the operation (store, find, move, get)?"""

    def rejection_reason(self, calling_ae: str, called_ae: str) -> str:
        """Why an association was rejected, as a sentence with the fix."""
