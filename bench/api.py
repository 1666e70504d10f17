"""``GET /api/v1/predictions/latest`` at 2,000 assets: the gateway's FastAPI app vs a bare
FastAPI app returning the same JSON from a list of dicts, each in its own process under wrk.

    python -m bench.api [--assets 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from typing import Any

from bench.common import free_port, row, write_result
from bench.http import python_server, wrk, wrk_available

PATH = "/api/v1/predictions/latest"


def _fetch(url: str, headers: dict[str, str]) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
        return json.loads(resp.read())


def run(quick: bool = False, assets: int = 2000, seconds: float | None = None) -> dict[str, Any]:
    seconds = seconds or (2 if quick else 10)
    if not wrk_available():
        msg = "wrk not found: run bench/setup_nodered.sh (or apt-get install -y wrk)"
        return {"skipped": msg, "rows": []}
    results: dict[str, Any] = {"assets": assets}
    bodies = {}
    for mode in ("bridge", "bare"):
        port = free_port()
        server = python_server("bench.api_server", mode, str(port), "--assets", str(assets))
        with server as (pid, key):
            url = f"http://127.0.0.1:{port}{PATH}"
            # bridge's API wants a read-scope key (bare FastAPI ignores the header).
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            bodies[mode] = _fetch(url, headers)
            results[mode] = wrk(
                url, seconds, pid, headers=tuple(f"{k}: {v}" for k, v in headers.items())
            )
    results["same_json"] = bodies["bridge"] == bodies["bare"]
    results["response_bytes"] = len(json.dumps(bodies["bridge"]))
    bridge, bare = results["bridge"]["requests_per_s"], results["bare"]["requests_per_s"]
    ratio = bridge / bare if bare else 0.0
    results["ratio"] = round(ratio, 3)
    results["rows"] = [
        row(
            f"GET {PATH}, {assets} assets (req/s)",
            bridge,
            bare,
            "req/s",
            ">= 60% of bare FastAPI",
            ratio >= 0.6,
            "wrk -t1 -c8; bridge checks an API key per request; same JSON"
            if results["same_json"]
            else "JSON DIFFERS",
        )
    ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    figures = run(assets=args.assets, seconds=args.seconds)
    print({k: v for k, v in figures.items() if k != "rows"})
    print(f"written {write_result('api', figures)}")


if __name__ == "__main__":
    main()
