"""What migration and its scheduler need of the node, as a Protocol: storage/node.py's Node provides it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.config.settings import NodeConfig
    from storage.index.database import Index

    from .placement import Placement


class PoolsContext(Protocol):
    """The node's settings, index and pool placement: enough to plan, move, verify and recall studies."""

    config: NodeConfig
    index: Index
    placement: Placement
