"""`bridge validate` checks each output's spool_dir: a directory the gateway can write or
create, apart from every other output's spool and from a local lake's tables; each problem at
its key's file:line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bridge.cli import main
from bridge.connectors import lakehouse

LEVELS = "enterprise: acme, site: dallas, area: a, line: l"


def _validate(tmp_path: Path, *outputs: str) -> tuple[int, str, Path]:
    lakehouse.register()  # as the entry point does in an installed gateway
    mapping = tmp_path / "mapping.yaml"
    lines = ["version: 1", "sources: {}", "assets: {}", "outputs:", *outputs]
    mapping.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["validate", str(mapping)])
    return result.exit_code, result.output, mapping


def _lake(name: str, uri: Path | str, spool: Path) -> str:
    return f"  {name}: {{kind: lakehouse, uri: '{uri}', spool_dir: '{spool}', {LEVELS}}}"


def test_spools_apart_and_creatable_are_valid(tmp_path: Path) -> None:
    # Two outputs may name one spool_dir: each spools under <spool_dir>/<name>.
    spool = tmp_path / "var" / "spool"  # created by the gateway
    code, output, _ = _validate(
        tmp_path,
        _lake("lake", "s3://plant/lake", spool),
        _lake("lake2", tmp_path / "tables", spool),
    )
    assert code == 0, output


def test_a_file_as_spool_is_refused_at_its_line(tmp_path: Path) -> None:
    taken = tmp_path / "spool"
    taken.write_text("not a directory")
    code, output, mapping = _validate(tmp_path, _lake("lake", "s3://plant/lake", taken))
    assert code == 3, output
    assert f"{mapping}:5: outputs.lake.spool_dir: not a directory: {taken}" in output


def test_overlapping_spools_and_a_spool_in_the_lake_are_refused(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    code, output, mapping = _validate(
        tmp_path,
        _lake("a", "s3://plant/lake", spool),
        # <spool>/a/b/... would sit inside output a's spool <spool>/a.
        _lake("b", "s3://plant/lake", spool / "a"),
        _lake("c", tmp_path / "lake", tmp_path / "lake" / "staging"),
    )
    assert code == 3, output
    assert f"{mapping}:6: outputs.b.spool_dir: the spool {spool / 'a' / 'b'} overlaps" in output
    assert f"of outputs.a ({spool / 'a'})" in output
    assert f"{mapping}:7: outputs.c.spool_dir: the spool" in output
    assert f"overlaps the tables of outputs.c (uri {tmp_path / 'lake'})" in output
    assert "2 problem(s) found" in output
