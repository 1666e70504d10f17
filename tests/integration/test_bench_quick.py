"""Smoke test of the benchmark suite: `python -m bench --quick` runs to the end and writes its
JSON. Figures are never judged here (performance is shown by the benchmark, not by tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN_PARTS = ("pipeline", "inference", "api", "memory", "peer")
# Smoke runs of 30-90 s each with servers of their own (node-opcua or asyncua load servers, an HMI
# process): run on demand with the rest of `python -m bench --quick`, left out here so CI stays
# within its time. The code they measure has its own tests.
SLOW_PARTS = "opcua_sessions,opcua_server,opcua_history,opcua_alarms,trigger"
ROW_KEYS = {"measure", "bridge", "floor", "unit", "ratio", "target", "met", "note"}


@pytest.mark.timeout(300)
def test_quick_bench_completes_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--skip", SLOW_PARTS, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "bench-quick"
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["python"]
    assert {"onnxruntime", "numpy", "fastapi", "asyncua"} <= set(machine["versions"])
    figures = doc["figures"]
    assert figures["quick"] is True
    assert set(OWN_PARTS) <= set(figures["parts"])
    assert not set(SLOW_PARTS.split(",")) & set(figures["parts"])
    for name in OWN_PARTS:
        part = figures["parts"][name]
        assert "error" not in part, f"{name}: {part.get('error')}"
        assert "skipped" in part or part["rows"], name
    for row in figures["rows"]:
        assert set(row) == ROW_KEYS
    # The always-available parts carry both sides of their comparison.
    pipeline = figures["parts"]["pipeline"]
    assert pipeline["bridge"]["tag_updates"] > 0 and pipeline["floor"]["tag_updates"] > 0
    assert pipeline["bridge"]["predictions_made"] == pipeline["bridge"]["predictions_expected"]
    inference = figures["parts"]["inference"]
    assert inference["bridge_rows_per_s"] > 0 and inference["raw_rows_per_s"] > 0
    memory = figures["parts"]["memory"]
    assert memory["validate_exit"] == 0 and memory["memory"]["updates"] > 0
    # The table printed on stdout has a line per row.
    for row in figures["rows"]:
        assert row["measure"] in done.stdout


@pytest.mark.timeout(180)
def test_quick_audit_bench_completes_and_writes_json(tmp_path: Path) -> None:
    # Stand-alone (not in `python -m bench`): PostgreSQL is skipped with a message when absent.
    out = tmp_path / "audit.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.audit", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=160,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "audit"
    figures = doc["figures"]
    assert figures["quick"] is True
    sqlite = figures["append"]["sqlite"]
    assert sqlite["single"]["entries"] > 0 and sqlite["concurrent"]["entries"] > 0
    assert figures["verify"]["sqlite"]["entries"] == 5000
    assert "skipped" in figures["verify"]["postgresql"] or (
        figures["verify"]["postgresql"]["entries"] == 5000
    )
    runs = figures["path"]["runs"]
    assert [r["ledger"] for r in runs] == ["off", "on"]
    assert all(r["samples"] > 0 for r in runs)
    assert runs[1]["chain_ok"] and runs[1]["ledger_checkpoints"] > 0
    for row in figures["rows"]:
        assert set(row) == ROW_KEYS
        assert row["measure"] in done.stdout


@pytest.mark.timeout(300)
def test_tiny_soak_injects_faults_samples_and_loses_nothing(tmp_path: Path) -> None:
    # Stand-alone (an hour by default): ~36 s of soak with every kind of fault at least once.
    out, report = tmp_path / "soak.json", tmp_path / "soak.md"
    faults = ["--restart-every-s", "20", "--modbus-every-s", "12", "--modbus-down-s", "4"]
    faults += ["--mes-every-s", "15", "--mes-down-s", "5", "--settle-s", "3"]
    files = ["--out", str(out), "--report", str(report), "--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--hours", "0.01", "--sample-s", "2", *faults, *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "soak"
    figures = doc["figures"]
    assert figures["injected"] == {"plant restart": 1, "modbus drop": 2, "mes outage": 2}
    # The gateway saw the faults: each plant restart and PLC drop is (at least) a reconnect.
    assert figures["reconnects"]["plant"] >= 1 and figures["reconnects"]["line-plc"] >= 2
    samples = figures["samples"]
    assert len(samples) >= 10
    for sample in samples:
        assert sample["rss_mb"] > 0 and sample["fds"] > 0 and sample["threads"] >= 1
    # Tasks come from the gateway's own gauge (bridge_asyncio_tasks).
    assert all(s["tasks"] > 0 for s in samples if s["scraped"])
    assert {s["phase"] for s in samples} >= {"running", "mes outage"}
    for key in ("rss_mb", "fds", "threads", "tasks"):
        fit = figures["fits"][key]
        assert fit["verdict"] in ("flat", "rising", "falling"), key
        assert fit["samples"] >= 3 and fit["band"] >= fit["floor"] > 0
    # The gateway kept working through the faults, and the MES got every stored prediction.
    assert figures["work"]["predictions_total"] > 0
    assert figures["settled"] and figures["gateway_exit"] == 0
    loss = figures["loss"]
    assert loss["no_loss"] and loss["missing"] == 0 and loss["dead_letters"] == 0
    assert loss["stored_predictions"] > 0 and loss["mes_unique_keys"] > 0
    assert loss["mes_unique_keys"] + loss["pending_in_outbox_at_stop"] >= loss["stored_predictions"]
    text = report.read_text()
    assert "| rss_mb (MB) |" in text and "**0 missing**" in text
    assert text in done.stdout
    # The same samples judged again with another warm-up: every sample is fitted now.
    again = tmp_path / "again.json"
    refit = ["--refit", str(out), "--warmup-s", "0", "--out", str(again), "--report", str(report)]
    redone = subprocess.run(
        [sys.executable, "-m", "bench.soak", *refit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert redone.returncode == 0, redone.stdout[-2000:] + redone.stderr[-2000:]
    refitted = json.loads(again.read_text())["figures"]
    assert refitted["warmup_s"] == 0 and refitted["samples"] == samples
    assert refitted["fits"]["rss_mb"]["all_samples"]["samples"] == len(samples)
