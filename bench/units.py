"""What engineering units cost: pint at load time, nothing per sample.

- ``import bridge.config`` / ``bridge.normalize`` in a fresh interpreter: pint must not be in
  ``sys.modules`` afterwards (it is imported on the first unit looked up).
- pint's import and registry build in a fresh interpreter (paid once per process, at load,
  only by a mapping with units).
- ``load_mapping`` of ``--assets`` assets x 4 tags with units (two converted), against the
  same mapping without any unit: the per-tag cost of validation and conversion set-up.
- The normalize transform per sample: plain scale/offset, and scale/offset + degF -> degC
  (folded into one multiply-add at load), and a pint conversion per sample as the floor that
  must not be paid.

    python -m bench.units [--assets 20000] [--samples 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import row, write_result

_FRESH = """
import json, sys, time
t0 = time.perf_counter()
import bridge.config, bridge.normalize
t1 = time.perf_counter()
pint_after_import = "pint" in sys.modules
from bridge import units
units.parse("degC")
t2 = time.perf_counter()
units.conversion("degF", "degC")
t3 = time.perf_counter()
print(json.dumps({"import_core_s": t1 - t0, "pint_loaded_by_import": pint_after_import,
                  "first_unit_s": t2 - t1, "first_conversion_s": t3 - t2}))
"""


def _fresh(runs: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _FRESH], capture_output=True, text=True, check=True
        )
        out.append(json.loads(done.stdout))
    return {
        "import_core_s": statistics.median(r["import_core_s"] for r in out),
        "pint_loaded_by_import": any(r["pint_loaded_by_import"] for r in out),
        "first_unit_s": statistics.median(r["first_unit_s"] for r in out),
        "first_conversion_s": statistics.median(r["first_conversion_s"] for r in out),
    }


def _mapping(path: Path, assets: int, with_units: bool) -> Path:
    units = (
        ("unit: mm/s", "unit: degF, convert_to: degC", "unit: psi, convert_to: bar", "unit: rpm")
        if with_units
        else ("", "", "", "")
    )
    tags = ("vibration", "bearing_temperature", "discharge_pressure", "speed")
    lines = [
        "version: 1",
        "sources:",
        '  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}',
        "templates:",
        "  pump:",
        "    tags:",
        *(
            f'      {t}: {{source: plant, address: "nsu=urn:x;s={{n}}.{t}"'
            + (f", {u}" if u else "")
            + "}"
            for t, u in zip(tags, units, strict=True)
        ),
        "assets:",
        *(f"  p{i}: {{template: pump, vars: {{n: '{i}'}}}}" for i in range(assets)),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _load_s(path: Path, runs: int) -> float:
    from bridge.config import load_mapping

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        load_mapping(path)
        times.append(time.perf_counter() - t0)
    return min(times)


def _per_sample_ns(samples: int) -> dict[str, float]:
    from bridge import units
    from bridge.config.resolved import ResolvedTag
    from bridge.normalize import compile_transform
    from bridge.types import Quality

    def tag(**kw: Any) -> ResolvedTag:
        return ResolvedTag("a.t", "a", "t", "s", None, "degC", 0.1, 0.0, 0.0, None, 10.0, **kw)

    plain = compile_transform(tag())
    converted = compile_transform(tag(source_unit="degF", convert=units.conversion("degF", "degC")))
    good = Quality.GOOD
    values = [float(i % 4000) for i in range(samples)]
    out: dict[str, float] = {}
    for name, fn in (("scale_only", plain), ("scale_and_degF_to_degC", converted)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for v in values:
                fn(v, good)
            best = min(best, time.perf_counter() - t0)
        out[name] = best / samples * 1e9
    quantity = units._registry().Quantity
    few = values[: max(1, samples // 100)]
    t0 = time.perf_counter()
    sink = 0.0
    for v in few:
        sink += quantity(v * 0.1, "degF").to("degC").magnitude
    out["pint_per_sample"] = (time.perf_counter() - t0) / len(few) * 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    fresh = _fresh(args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        with_units = _load_s(_mapping(Path(tmp) / "u.yaml", args.assets, True), args.runs)
        without = _load_s(_mapping(Path(tmp) / "n.yaml", args.assets, False), args.runs)
    per_sample = _per_sample_ns(args.samples)
    tags = args.assets * 4
    rows = [
        row(
            "import bridge.config+normalize",
            fresh["import_core_s"],
            None,
            "s",
            "pint not imported",
            not fresh["pint_loaded_by_import"],
        ),
        row("first unit (pint import + registry)", fresh["first_unit_s"], None, "s", "", None),
        row(
            f"load_mapping {tags} tags with units",
            with_units,
            without,
            "s",
            "",
            None,
            "floor: the same mapping without units",
        ),
        row(
            "transform degF->degC per sample",
            per_sample["scale_and_degF_to_degC"],
            per_sample["scale_only"],
            "ns",
            "= scale only",
            None,
            f"pint per sample would be {per_sample['pint_per_sample']:.0f} ns",
        ),
    ]
    figures: dict[str, Any] = {
        "fresh_process": fresh,
        "load_mapping": {
            "assets": args.assets,
            "tags": tags,
            "with_units_s": with_units,
            "without_units_s": without,
        },
        "transform_ns_per_sample": per_sample,
        "rows": rows,
    }
    for r in rows:
        ratio = f"  x{r['ratio']}" if r["ratio"] is not None else ""
        floor = f" (floor {r['floor']:.4g})" if r["floor"] is not None else ""
        print(f"{r['measure']:<45} {r['bridge']:.4g} {r['unit']}{floor}{ratio}  {r['note']}")
    print(f"pint loaded by importing the core: {fresh['pint_loaded_by_import']}")
    print(f"written {write_result('units', figures)}")


if __name__ == "__main__":
    main()
