#!/opt/bridge/bin/python
"""The image's HEALTHCHECK: GET /healthz of the worker in this container, at the port and address
its profile sets (metrics_port / BRIDGE_METRICS_PORT, metrics_host / BRIDGE_METRICS_HOST). Exit 0
healthy, 1 not, with the reason on stdout (`docker inspect` shows it)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from bridge_cli.config import load_settings
from bridge_cli.errors import BridgeError

# Bound to every interface: ask on loopback.
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def main() -> int:
    try:
        settings = load_settings()
    except BridgeError as exc:
        print(f"unhealthy: {exc}")
        return 1
    if not settings.metrics_port:
        print("unhealthy: metrics_port is 0 (metrics off), so there is no /healthz to ask")
        return 1
    host = LOOPBACK.get(settings.metrics_host, settings.metrics_host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {exc.read().decode().strip()}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {getattr(exc, 'reason', exc)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
