"""knflow's dashboard: runs, models, serving and failed events in one page, composed from broker, registry, gateway.

Public surface: ``Dashboard`` (``python -m knflow.dashboard`` or ``knflow dashboard``).
"""

from knflow.dashboard.server import Dashboard

__all__ = ["Dashboard"]
