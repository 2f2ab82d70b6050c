"""Pieces of the end-to-end test: a webhook receiver (and dcgm-exporter stand-in), Prometheus API calls."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What dcgm-exporter serves for one GPU, with the UUID of the fake NVML GPU, so the dashboards'
# on(UUID) join has something to join. A stand-in for the real exporter (no GPU here), not a copy of it.
DCGM_TEXT = """\
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{{gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA H100",Hostname="n1"}} 20480
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA H100",Hostname="n1"}} 71
# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{{gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA H100",Hostname="n1"}} 0
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{{gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA H100",Hostname="n1"}} 412.5
"""


class Receiver:
    """Alertmanager's webhook target on 127.0.0.1 (POST /alerts), also serving GET /dcgm/metrics."""

    def __init__(self, gpu_uuid: str) -> None:
        self.notifications: list[tuple[float, dict[str, Any]]] = []  # (arrival time, payload)
        self._arrived = threading.Condition()
        dcgm = DCGM_TEXT.format(uuid=gpu_uuid).encode()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._arrived:
                    receiver.notifications.append((time.time(), json.loads(body)))
                    receiver._arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/dcgm/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(dcgm)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self._thread.start()

    def first_alert(self, alertname: str) -> tuple[float, dict[str, Any]] | None:
        """(arrival time, alert) of the first firing ``alertname`` received, or None."""
        for arrived, payload in self.notifications:
            for alert in payload.get("alerts", []):
                if alert["labels"].get("alertname") == alertname and alert.get("status") == "firing":
                    return arrived, alert
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def api(base: str, path: str, **params: str) -> Any:
    """GET a Prometheus API path; returns ``data``, raises with Prometheus' error otherwise."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
    if body.get("status") != "success":
        raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def finite_series(base: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """Series of a range query over [start, end] (1 s steps) with at least one finite value."""
    data = api(base, "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
    return [s for s in data["result"] if any(math.isfinite(float(v)) for _, v in s["values"])]
