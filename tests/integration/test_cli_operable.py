"""The `bridge` command as CI and operators run it: a real `python -m bridge` process in a
throwaway working directory. `validate --no-env` without the secrets, every file the mapping
names checked, read-only commands that create nothing, SQLite paths relative to the mapping,
quiet stderr, `--version`, `--json` and the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import click
import pytest
from sqlalchemy import create_engine, inspect
from stores import PG_URL, pg_schema

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]

# Exit codes, as the README documents them.
OK, FAILED, USAGE, MAPPING, STORE = 0, 1, 2, 3, 4

SECRETS = """
version: 1
gateway:
  id: ci
  store: sqlite:///var/ci.db
  api: {{host: 127.0.0.1, port: "${{API_PORT:-8000}}"}}
sources:
  plant:
    kind: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    username: ops
    password: ${{PLANT_PASSWORD}}
  plc: {{kind: modbus, host: "${{PLC_HOST}}", port: "${{PLC_PORT}}"}}
assets:
  line:
    tags:
      pressure: {{source: plc, address: {{table: holding, address: 0, type: uint16}}}}
{extra}
"""


def bridge(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLANT_", "PLC_"))}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory apart from the mapping's folder."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    return here


def write(tmp_path: Path, text: str, name: str = "plant/mapping.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_version(cwd: Path) -> None:
    done = bridge("--version", cwd=cwd)
    assert done.returncode == OK, done.stderr
    assert done.stdout.startswith("bridge ") and done.stdout.split()[1][0].isdigit()


def test_validate_without_the_environment_lists_what_run_needs(tmp_path: Path, cwd: Path) -> None:
    mapping = write(tmp_path, SECRETS.format(extra=""))
    # Secrets set in the environment: --no-env reads none of them.
    env = {"PLANT_PASSWORD": "s3cret-pw", "PLC_HOST": "127.0.0.1", "PLC_PORT": "5020"}
    done = bridge("validate", "--no-env", str(mapping), cwd=cwd, env=env)
    assert done.returncode == OK, done.stdout + done.stderr
    assert "OK (2 sources, 1 assets, 1 tags, 0 models, 0 outputs)" in done.stdout
    assert "needs PLANT_PASSWORD at run time (sources.plant.password)" in done.stdout
    assert "needs PLC_HOST at run time (sources.plc.host)" in done.stdout
    assert "needs PLC_PORT at run time (sources.plc.port)" in done.stdout
    assert "API_PORT" not in done.stdout  # it has a default
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert done.stderr == ""
    assert not (tmp_path / "plant" / "var").exists() and files_under(cwd) == set()

    as_json = bridge("validate", "--no-env", "--json", str(mapping), cwd=cwd)
    assert as_json.returncode == OK, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["valid"] is True and report["sources"] == 2
    assert report["needs"] == {
        "PLANT_PASSWORD": ["sources.plant.password"],
        "PLC_HOST": ["sources.plc.host"],
        "PLC_PORT": ["sources.plc.port"],
    }

    # Without --no-env an unset variable is a problem of the mapping, as before.
    strict = bridge("validate", str(mapping), cwd=cwd)
    assert strict.returncode == MAPPING
    assert "environment variable PLANT_PASSWORD is not set" in strict.stderr
    # With them set it is valid, and nothing is listed as needed.
    full = bridge("validate", str(mapping), cwd=cwd, env=env)
    assert full.returncode == OK, full.stderr
    assert "needs" not in full.stdout


def test_validate_without_the_environment_still_reports_other_mistakes(
    tmp_path: Path, cwd: Path
) -> None:
    extra = "models:\n  m: {file: models/nope.onnx, version: '1', assets: [line, lne],\n" \
        "      features: [{tag: pressure, stat: mean}]}\n"  # fmt: skip
    mapping = write(tmp_path, SECRETS.format(extra=extra))
    done = bridge("validate", "--no-env", str(mapping), cwd=cwd)
    assert done.returncode == MAPPING, done.stdout + done.stderr
    assert f"{mapping}:19: models.m.assets.1: unknown asset 'lne'" in done.stderr
    assert "model file not found: models/nope.onnx" in done.stderr
    assert "PLANT_PASSWORD" not in done.stderr
    as_json = bridge("validate", "--no-env", "--json", str(mapping), cwd=cwd)
    assert as_json.returncode == MAPPING
    problems = json.loads(as_json.stdout)["problems"]
    assert {p["key"] for p in problems} == {"models.m.assets.1", "models.m.file"}
    assert all(p["file"] == str(mapping) and p["fix"] for p in problems)


FILES = """
version: 1
gateway:
  store: sqlite:///var/f.db
  api:
    host: 127.0.0.1
    tls:
      certificate: certs/api.pem
      private_key: certs/api.key
  models: {public_key: keys/sign.pub}
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840", username: ops,
          password_file: secrets/plant.pw}
  plc: {kind: modbus, host: 127.0.0.1, port: 5020}
assets:
  line:
    tags:
      pressure: {source: plc, address: {table: holding, address: 0, type: uint16}}
"""


def test_every_file_the_mapping_names_is_checked(tmp_path: Path, cwd: Path) -> None:
    mapping = write(tmp_path, FILES)
    expected = {
        "gateway.api.tls.certificate": (8, "certs/api.pem"),
        "gateway.api.tls.private_key": (9, "certs/api.key"),
        "gateway.models.public_key": (10, "keys/sign.pub"),
        "sources.plant.password_file": (13, "secrets/plant.pw"),
    }
    for command in ("validate", "run"):
        done = bridge(command, str(mapping), cwd=cwd)
        assert done.returncode == MAPPING, (command, done.stdout, done.stderr)
        for key, (line, path) in expected.items():
            assert f"{mapping}:{line}: {key}: file not found: {path} (fix: " in done.stderr, (
                key,
                done.stderr,
            )
        assert "Traceback" not in done.stderr and "FileNotFoundError" not in done.stderr
        assert files_under(cwd) == set()

    # Put in place (API paths from the working directory, the public key beside the mapping):
    # those problems are gone, whatever else the files hold is the connectors' and API's check.
    for path in ("certs/api.pem", "certs/api.key", "secrets/plant.pw"):
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / path).write_text("x\n")
    (mapping.parent / "keys").mkdir()
    (mapping.parent / "keys" / "sign.pub").write_text("x\n")
    (cwd / "secrets" / "plant.pw").chmod(0o000)
    later = bridge("validate", str(mapping), cwd=cwd)
    assert "file not found" not in later.stderr, later.stderr
    if os.geteuid() != 0:  # root reads any file
        assert "sources.plant.password_file: file not readable" in later.stderr


READ_ONLY = [
    ["apikeys", "list"],
    ["apikeys", "list", "--json"],
    ["apikeys", "revoke", "0123456789ab"],
    ["outbox", "list"],
    ["outbox", "list", "--json"],
    ["outbox", "replay"],
    ["models", "list"],
    ["models", "list", "--json"],
    ["models", "show", "pump-health"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c))
def test_read_only_commands_create_no_store(tmp_path: Path, cwd: Path, command: list[str]) -> None:
    env = {"PLANT_PASSWORD": "pw", "PLC_HOST": "127.0.0.1", "PLC_PORT": "5020"}
    mapping = write(tmp_path, SECRETS.format(extra=""))
    before = files_under(tmp_path)
    by_mapping = bridge(*command, "--mapping", str(mapping), cwd=cwd, env=env)
    assert by_mapping.returncode == STORE, by_mapping.stdout + by_mapping.stderr
    where = tmp_path / "plant" / "var" / "ci.db"  # relative to the mapping, not to cwd
    assert by_mapping.stderr.startswith(f"error: no store at {where}"), by_mapping.stderr
    assert by_mapping.stdout == ""
    by_url = bridge(*command, "--store", "sqlite:///var/x.db", cwd=cwd)
    assert by_url.returncode == STORE and "error: no store at var/x.db" in by_url.stderr
    assert files_under(tmp_path) == before  # no database, no folder


def test_read_only_commands_create_no_tables_in_postgresql(cwd: Path) -> None:
    with pg_schema("bridge_cli_ro") as schema:
        url = f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
        done = bridge("apikeys", "list", "--store", url, cwd=cwd)
        assert done.returncode == STORE, done.stderr
        assert "no store at" in done.stderr and "no bridge tables" in done.stderr
        engine = create_engine(PG_URL)
        try:
            with engine.connect() as conn:
                assert inspect(conn).get_table_names(schema=schema) == []
        finally:
            engine.dispose()


def test_store_beside_the_mapping_and_quiet_stderr(tmp_path: Path, cwd: Path) -> None:
    env = {"PLANT_PASSWORD": "pw", "PLC_HOST": "127.0.0.1", "PLC_PORT": "5020"}
    mapping = write(tmp_path, SECRETS.format(extra=""))
    created = bridge("apikeys", "create", "ops", "--mapping", str(mapping), cwd=cwd, env=env)
    assert created.returncode == OK, created.stderr
    key = created.stdout.strip()
    assert (tmp_path / "plant" / "var" / "ci.db").is_file()
    assert files_under(cwd) == set()  # not relative to the working directory
    # The only stderr line is the notice that the key cannot be shown again: no migrations.
    assert created.stderr.count("\n") == 1 and "cannot be shown again" in created.stderr

    other = tmp_path / "other"
    other.mkdir()
    listed = bridge("apikeys", "list", "--json", "--mapping", str(mapping), cwd=other, env=env)
    assert listed.returncode == OK and listed.stderr == "", listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["scope"], r["revoked_at"]) for r in rows] == [("ops", "read", None)]
    assert key not in listed.stdout
    for command in (["outbox", "list"], ["models", "list"]):
        quiet = bridge(*command, "--json", "--mapping", str(mapping), cwd=other, env=env)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (OK, "", ""), quiet.stderr
    assert files_under(other) == set()

    debug = bridge("--log-level", "debug", "apikeys", "list", "--mapping", str(mapping),
                   cwd=other, env=env)  # fmt: skip
    assert debug.returncode == OK
    assert "store_opened" in debug.stderr and "Context impl SQLiteImpl" in debug.stderr

    revoked = bridge("apikeys", "revoke", "0123456789ab", "--mapping", str(mapping), cwd=other,
                     env=env)  # fmt: skip
    assert revoked.returncode == STORE and "no key 0123456789ab" in revoked.stderr


def test_exit_codes_and_json_of_listings(tmp_path: Path, cwd: Path) -> None:
    usage = bridge("apikeys", "list", "--no-such-option", cwd=cwd)
    assert usage.returncode == USAGE and "No such option" in usage.stderr
    both = bridge("outbox", "list", cwd=cwd)
    assert both.returncode == USAGE and "--mapping FILE or --store URL" in both.stderr
    missing = bridge("validate", str(tmp_path / "absent.yaml"), cwd=cwd)
    assert missing.returncode == MAPPING and "cannot read the mapping" in missing.stderr
    demo = bridge("validate", str(ROOT / "mappings" / "demo.yaml"), cwd=cwd)
    assert (demo.returncode, demo.stderr) == (OK, "")

    url = f"sqlite:///{tmp_path / 's.db'}"
    assert bridge("apikeys", "create", "a", "--store", url, cwd=cwd).returncode == OK
    not_found = bridge("models", "show", "pump-health", "--store", url, cwd=cwd)
    assert not_found.returncode == STORE, not_found.stderr
    for command in (["models", "list"], ["outbox", "list", "--dead"], ["apikeys", "list"]):
        done = bridge(*command, "--json", "--store", url, cwd=cwd)
        assert done.returncode == OK and done.stderr == "", (command, done.stderr)
        for line in done.stdout.splitlines():
            json.loads(line)
    certs = bridge("certs", "list", "--json", "--pki-dir", str(tmp_path / "pki"), cwd=cwd)
    assert certs.returncode == OK, certs.stderr
    assert all(json.loads(line) for line in certs.stdout.splitlines())


def test_every_command_and_option_has_help() -> None:
    missing: list[str] = []

    def walk(cmd: click.Command, path: list[str], ctx: click.Context) -> None:
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.help and "--help" not in p.opts:
                missing.append(f"{' '.join(path)} {p.opts[-1]}")
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, [*path, name], click.Context(sub, parent=ctx, info_name=name))

    walk(main, ["bridge"], click.Context(main, info_name="bridge"))
    assert missing == []
    # Plugin commands are listed with their help in `bridge --help`.
    listed = bridge("--help", cwd=ROOT)
    assert listed.returncode == OK
    for name in ("demo", "simulate", "verify", "certs", "browse", "outbox", "models"):
        line = next(ln for ln in listed.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10, line
