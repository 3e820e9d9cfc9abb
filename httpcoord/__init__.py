"""httpcoord: ZooKeeper's data model and guarantees served as HTTP/JSON.

Packages: ``tree`` (the pure znode state machine), ``cluster`` (consensus core,
log storage and the node that drives them), ``routes`` (aiohttp handlers),
``client`` (Python client). ``errors`` is the one closed set of typed errors.
"""

__version__ = "0.1.0"
