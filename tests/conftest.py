"""Shared pytest options and fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=None,
        help="number of seeds each consensus simulation test runs (default: its own budget)",
    )
    parser.addoption(
        "--chaos-minutes",
        type=float,
        default=0.5,
        help="how long the fault-suite soak runs its faults (tests/chaos/test_soak.py)",
    )
    parser.addoption(
        "--chaos-seed",
        type=int,
        default=1,
        help="seed of the fault-suite soak: its fault schedule and its clients",
    )
    parser.addoption(
        "--chaos-net",
        choices=("auto", "netns", "proxy"),
        default="auto",
        help="the fault suite's network: network namespaces, TCP proxies between the peers,"
        " or auto (namespaces where they can be made, else proxies)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The fault suite's harness reads the choice where its clusters are made.
    from tests.chaos import harness

    harness.NET_CHOICE = str(config.getoption("--chaos-net"))
