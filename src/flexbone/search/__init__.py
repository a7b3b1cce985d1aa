"""Finding the sub-network for a budget: costs, latency tables built on this device, accuracy predictor, search.

* :mod:`.costs` - :class:`Cost` (a named function of a SubnetConfig), exact and fast ``macs`` / ``params``,
  :func:`build_costs`, :func:`parse_budget` (``'latency=20ms'`` -> ``('latency', 20.0)``).
* :mod:`.latency` - :func:`time_module`, :class:`MeasuredLatency` (extract and time), :class:`LatencyTable`
  (the once-for-all lookup table, built on the user's device: ``flexbone latency-table``).
* :mod:`.parts` - a sub-network as a chain of standalone parts (stem, blocks, head), what the tables price.
"""
from .costs import COST_NAMES, Cost, MacsCost, ParamsCost, build_costs, parse_budget
from .latency import LatencyTable, MeasuredLatency, TableLatency, time_module
from .parts import SubnetParts

__all__ = ["COST_NAMES", "Cost", "MacsCost", "ParamsCost", "build_costs", "parse_budget", "LatencyTable",
           "MeasuredLatency", "TableLatency", "time_module", "SubnetParts"]
