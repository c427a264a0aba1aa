"""One behavioural contract (`tests/transports/conformance.py`), checked against every
registered transport backend over real loopback: one case per (backend, behaviour)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.transports.conformance import check_cases
from tests.transports.conformance import config_for as config_for  # tests/faults uses it
from transports import transport_names

pytestmark = pytest.mark.network


@pytest.mark.parametrize(("kind", "check"), check_cases(transport_names()))
def test_backend_meets_the_transport_contract(kind: str, check: Callable[[str], None]):
    check(kind)
