"""Which peers may name the client through X-Forwarded-For (edge/session.py ``is_trusted``)."""

from __future__ import annotations

import pytest

from xlmate.config import EdgeConfig
from xlmate.edge.session import is_trusted
from xlmate.errors import ConfigError


def test_exact_addresses_and_cidr_blocks() -> None:
    """An exact address or any address inside a listed block is trusted; nothing else is."""
    proxies = ("127.0.0.1", "10.0.0.0/8", "fd00::/8")
    assert is_trusted("127.0.0.1", proxies)
    assert is_trusted("10.42.7.9", proxies) and is_trusted("fd00::1", proxies)
    assert not is_trusted("127.0.0.2", proxies) and not is_trusted("11.0.0.1", proxies)
    assert not is_trusted("", proxies) and not is_trusted("not-an-ip", proxies)
    assert not is_trusted("10.0.0.1", ())


def test_a_trusted_proxy_that_is_not_an_address_is_refused() -> None:
    """--trusted-proxy takes addresses or CIDR blocks; a host name is a config error."""
    with pytest.raises(ConfigError, match="trusted-proxy"):
        EdgeConfig(trusted_proxies=("nginx.local",))
    EdgeConfig(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
