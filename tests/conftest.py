"""Shared fixtures and the Hypothesis profiles.

Profiles (pick with HYPOTHESIS_PROFILE): `dev` (default on a workstation), `ci`
(chosen automatically when CI=true: derandomized, so a CI run is repeatable) and
`thorough` (many more examples, for a long run before a release).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter

settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser):
    parser.addoption("--thorough", action="store_true",
                     help="use the 'thorough' Hypothesis profile (1,000 examples per property)")


def pytest_configure(config):
    if config.getoption("--thorough"):
        settings.load_profile("thorough")

ENGINES = [Interpreter, FastEngine]


@pytest.fixture(params=ENGINES, ids=lambda e: e.name)
def engine_cls(request):
    """Each behavioural test runs once per engine: the reference and the fast one."""
    return request.param
