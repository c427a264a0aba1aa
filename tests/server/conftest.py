"""Fixtures of the policy-server tests: the env whose contract clients declare, and a server
on loopback (local and zmq) with a maker of raw clients that are closed afterwards."""

from __future__ import annotations

import pytest

from envs import make_env
from tests.server.wire import RawClient, start_server


@pytest.fixture(scope="module")
def env():
    env = make_env("mujoco_pick_place")
    yield env
    env.close()


@pytest.fixture(params=["local", "zmq"])
def served(request, env):
    server, config = start_server(env, kind=request.param)
    clients = []

    def new_client() -> RawClient:
        clients.append(RawClient(config))
        return clients[-1]

    yield server, new_client
    for client in clients:
        client.close()
    server.close()
