"""What the reference stack's edge adds to its derived preflight config (`config_from_stack`): the routes
to fetch, the proxy's metrics, and with Traefik the resolve overrides and the API whose routers,
services and servers the audit reads (checks_traefik.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse


def stack_edge(stack: Any, pids: dict[str, Any], target: str) -> dict[str, Any]:
    """PreflightConfig fields for the stack (a sut.config.StackConfig) whose pids.json is `pids`; its
    "routes" as (name, url) pairs."""
    host = urlparse(target).hostname or stack.host
    http_port = stack.proxy.http_port
    if stack.proxy.kind != "traefik":  # nginx: one server block, /nginx_status for its counters
        routes = [("frontend", f"{target}/"), ("gateway /health", f"{target}/health"),
                  ("proxy status", f"{target}/nginx_status")]
        if http_port:
            routes.append(("http → https", f"http://{host}:{http_port}/"))
        return {"routes": tuple(routes), "proxy_metrics": f"{target}/nginx_status"}
    from sut.proxy.traefik import hosts

    names, port = hosts(stack), stack.proxy.https_port
    api = str(pids.get("traefik_api", ""))
    routes = [("frontend", f"https://{names['www']}:{port}/"),
              ("gateway /health", f"{target}/health"),
              ("grafana", f"https://{names['grafana']}:{port}/")]
    if http_port:
        routes.append(("http → https", f"http://{host}:{http_port}/"))
    resolve = pids.get("resolve") or {}
    return {"routes": tuple(routes), "proxy_metrics": f"{api}/metrics" if api else "",
            "resolve": tuple((str(k), str(v)) for k, v in resolve.items()), "traefik_api": api}
