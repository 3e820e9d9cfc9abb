"""Watches: the bounded history of applied events (``history``) and the hub
that fans new events out to long-poll and SSE subscribers (``hub``).

Fed by the node after each txn is applied, in zxid order; imports ``tree``
and ``errors``, never ``routes``.
"""
