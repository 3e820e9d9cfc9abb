"""The znode tree: a pure, deterministic state machine.

``Tree.apply(zxid, txn) -> (result, events)``. No I/O, no clock, no asyncio:
time and the zxid arrive inside the txn. Imports only ``httpcoord.errors``;
never ``cluster`` or ``routes``.
"""
