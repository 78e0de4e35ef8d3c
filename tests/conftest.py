"""Shared fixtures. Every test runs offline: sockets are refused, so nothing can touch the network."""
from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ.setdefault("TBAR_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "tbar-tests"))
torch.set_num_threads(int(os.environ.get("TBAR_TEST_THREADS", "2")))


class NetworkBlocked(RuntimeError):
    pass


def _loopback(address) -> bool:
    """This machine only (the browser test talks to chromedriver and a local web server)."""
    host = address[0] if isinstance(address, tuple) else address
    return host in ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any attempt to open a network connection (AF_UNIX stays allowed for local tooling)."""
    real = socket.socket.connect

    def guarded(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise NetworkBlocked(f"test tried to reach the network: {address!r}")
        return real(self, address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    real_create = socket.create_connection

    def create(address, *a, **k):
        if not _loopback(address):
            raise NetworkBlocked(f"test tried to reach the network: create_connection {address!r}")
        return real_create(address, *a, **k)

    monkeypatch.setattr(socket, "create_connection", create)
    yield


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 32, 32, generator=g)
