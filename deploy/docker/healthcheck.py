#!/usr/bin/env python3
"""Container health check: GET a service's /healthz (or /readyz) over mutual TLS.

The gateway and the connectors accept TLS connections only from certificates of their CA,
so the probe presents the service's own certificate, mounted at run time (nothing is baked
into the image). Settings come from the environment:

    XIEZHI_HEALTH_URL     default https://127.0.0.1:8000/healthz
    XIEZHI_HEALTH_CERT    client certificate (PEM)   } the service's own, e.g. /run/xiezhi/tls/tls.crt
    XIEZHI_HEALTH_KEY     its private key (PEM)      }
    XIEZHI_HEALTH_CA      the CA to verify the service by
    XIEZHI_HEALTH_EXPECT  "ok" (default): only 2xx is healthy;
                          "answer": any HTTP answer below 500 is (a connector answers 403 to any
                          certificate but the gateway's — it is alive and serving TLS)

Exit 0 when healthy, 1 otherwise. Standard library only; one second of budget per attempt.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from urllib.parse import urlsplit


def main() -> int:
    url = urlsplit(os.environ.get("XIEZHI_HEALTH_URL", "https://127.0.0.1:8000/healthz"))
    expect = os.environ.get("XIEZHI_HEALTH_EXPECT", "ok")
    host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
    try:
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=os.environ.get("XIEZHI_HEALTH_CA"))
            cert, key = os.environ.get("XIEZHI_HEALTH_CERT"), os.environ.get("XIEZHI_HEALTH_KEY")
            if cert:
                context.load_cert_chain(cert, key)
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=3, context=context
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=3)
        connection.request("GET", url.path or "/healthz")
        status = connection.getresponse().status
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    healthy = 200 <= status < 300 if expect == "ok" else status < 500
    print(f"{'healthy' if healthy else 'unhealthy'}: HTTP {status}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
