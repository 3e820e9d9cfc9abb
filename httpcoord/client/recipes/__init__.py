"""Coordination recipes built only on the public API, with the semantics of
their Curator and kazoo namesakes. docs/client.md shows each in use and says
what each does when its session is suspended or lost."""
