"""The network guard itself: tests may talk to this machine only."""
import socket

import pytest


def test_outside_connections_are_refused():
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)  # TEST-NET-3, never routable
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network"):
            s.connect(("203.0.113.1", 80))
    finally:
        s.close()


def test_loopback_stays_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        client = socket.create_connection(server.getsockname(), timeout=2)
        client.close()
    finally:
        server.close()
