"""The fault suite: real processes, real partitions, recorded histories and
their checkers (see docs/testing.md)."""
