"""The HTTP API serves HTTPS when given a certificate and key, and the CLI's store client trusts it."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_config
from tests.processors.test_http_app import MemoryView
from tests.processors.test_http_e2e import free_port
from tests.sinks.notify.support import self_signed_cert
from tocsin.processors.http import create_app, serve, stop


def test_the_api_serves_https_with_a_certificate(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    cfg = make_config("127.0.0.1:9", "chdb:///tmp/unused", api={
        "token": "t" * 20, "http_addr": f"127.0.0.1:{port}", "tls_certfile": cert, "tls_keyfile": key})
    server, thread = serve(create_app(MemoryView(), cfg), cfg)
    try:
        assert requests.get(f"https://127.0.0.1:{port}/health", verify=cert, timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}/health", timeout=10)  # an unknown CA is refused
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=10)  # no plaintext on the TLS port
    finally:
        stop(server, thread)
