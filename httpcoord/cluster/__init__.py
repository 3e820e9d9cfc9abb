"""Consensus and durability: the pure consensus core, its storage edge
(memory and SQLite, one Protocol) and the node loop that drives them.

May import ``tree`` and ``errors``; never ``routes``.
"""
