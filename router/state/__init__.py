"""Live selection state (RTT, health, heat, cost), local first, shared through Redis."""

from router.state.local import SelectionState

__all__ = ["SelectionState"]
