"""Read workers: processes beside a node that answer reads and watches on
its port from copies of its tree (``serve --read-workers N``).

May import ``cluster``, ``tree``, ``watch``, ``routes`` and ``errors``; only
``routes.app`` and the command line import this package.
"""
