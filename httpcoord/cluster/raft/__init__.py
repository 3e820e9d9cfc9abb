"""The consensus core: Raft as a plain, deterministic state machine.

``core`` (the ``Raft`` class), ``log`` (its view of stable and unstable
entries), ``messages`` (entries, durable state, messages and their wire
encoding) and ``storage`` (the storage Protocols and ``MemoryStorage``).

Imports nothing but the standard library, orjson and each other: no asyncio,
no sockets, no SQLite, no clock. Time is ``tick()``, randomness an injected
``random.Random``; that is what lets tests/sim run it across thousands of
seeded schedules.
"""
