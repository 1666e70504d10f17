"""``bridge compliance report`` on a real store (SQLite and PostgreSQL) filled through the real
repositories: API keys (one revoked), model versions registered, activated, rolled back and
shadowed by the registry repository (with their own ledger entries), an alert raised and
acknowledged, operator feedback on stored predictions, and ledger entries appended with
``AuditRepository`` (mapping loaded, reloaded and refused, an integrity mismatch that withheld a
model), closed by a checkpoint signed with the gateway's key.

- Both formats hold every section with its facts: the key's id and scope, each version's sha256
  and whether it is signed, the chain "verified" with the store's entry count, the MTTA, the
  decision coverage, the shadow agreement, who changed what, when, how and why, the interface
  protections, and the ISO/IEC 27001 and NIST AI RMF references; the header names the gateway,
  the mapping revision, the period, the time and the version.
- No secret reaches the report: passwords and tokens of the mapping (in URLs, headers, users),
  the store URL's password, the API keys themselves and their hashes.
- Names from people are escaped: a model, a key and a reason named ``<script>...`` stay text in
  both formats; the HTML page loads and runs nothing.
- A ledger edited in the database: the report is still written (atomically replacing the last
  one), says the chain is broken at that entry, and the command exits 1.
- A mapping edited after it was signed, with signatures required: exit 1, said in the report.
- A suffix that is not .md or .html, or a period that ends before it starts, is refused before
  anything is opened; the real ``python -m bridge`` process writes the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from stores import PG_URL, pg_schema

from bridge.audit.checkpoints import sign_checkpoint
from bridge.auth import Scope
from bridge.cli import main
from bridge.config.signing import PUBLIC_KEY_VARIABLE, sign_mapping
from bridge.ed25519 import generate_keypair, load_private_key
from bridge.lifecycle.states import move
from bridge.store.alerts import AlertFilter, AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository, ApiKeyRow
from bridge.store.audit import AuditEntryRow, AuditFilter, AuditRepository
from bridge.store.auditchain import NewAuditEntry, format_time
from bridge.store.db import Store, open_store
from bridge.store.labels import LabelRepository
from bridge.store.registry import Comparison, RegistryRepository, VersionRecord, VersionState
from bridge.store.repository import PredictionRepository
from bridge.types import Feedback, Prediction, Quality

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
OK, FAILED, USAGE = 0, 1, 2
GATEWAY = "plant-7"
EVIL = "<script>alert(1)</script>"

# Every secret the mapping or the store URL holds; none may appear in a report.
ENV = {
    "PLANT_PASSWORD": "plant-pw-5ecret",
    "HMI_PASSWORD": "hmi-pw-5ecret",
    "MES_PASSWORD": "mes-pw-5ecret",
    "MES_TOKEN": "mes-token-5ecret",
    "HOOK_TOKEN": "hook-token-5ecret",
}
PG_PASSWORD = "pg-pw-5ecret"  # the server trusts 127.0.0.1: a password is sent, never checked

MAPPING = """\
version: 1
gateway:
  id: plant-7
  store: "sqlite:///var/not-this-one.db"
  api: {host: 127.0.0.1, port: 8000}
  audit: {mirror: var/audit.jsonl, integrity_s: 30}
sources:
  plant:
    kind: opcua
    endpoint: opc.tcp://plc.plant.local:4840
    username: ops
    password: ${PLANT_PASSWORD}
    security:
      policy: Basic256Sha256
      mode: SignAndEncrypt
      certificate: pki/own/cert.der
      private_key: pki/own/key.pem
  plc: {kind: modbus, host: 10.0.0.5, port: 502}
templates:
  pump:
    tags:
      vibration: {source: plant, address: "nsu=urn:t;s={n}.V", unit: mm/s}
      temperature: {source: plant, address: "nsu=urn:t;s={n}.T", unit: degC}
assets:
  pump-a: {template: pump, vars: {n: pa}}
  pump-b: {template: pump, vars: {n: pb}}
  line: {tags: {pressure: {source: plc, address: {table: holding, address: 0, type: uint16}}}}
models:
  pump-health:
    file: models/pump_health.onnx
    version: "1"
    template: pump
    reference: models/reference.json
    drift: {threshold: 0.2, webhook: "https://retrain.example.com/hook?token=${HOOK_TOKEN}"}
    features:
      - {tag: vibration, stat: mean}
      - {tag: temperature, stat: mean}
  line-pressure:
    file: models/line.onnx
    version: "3"
    assets: [line]
    outputs: {value: y}
    features:
      - {tag: pressure, stat: mean}
outputs:
  hmi:
    kind: opcua-server
    endpoint: opc.tcp://0.0.0.0:4850
    security_policies: [Basic256Sha256_SignAndEncrypt]
    certificate: pki/server/cert.der
    private_key: pki/server/key.pem
    users:
      - {username: operator1, password: "${HMI_PASSWORD}", role: operator}
  mes:
    kind: mes-rest
    url: "https://mesuser:${MES_PASSWORD}@mes.example.com/api/events?token=${MES_TOKEN}"
    headers: {Authorization: "Bearer ${MES_TOKEN}"}
"""

REFERENCE = {
    "format": "bridge-reference/1",
    "features": {
        name: {"mean": 1.0, "std": 0.2, "bins": [0.0, 1.0, 2.0], "fractions": [0.5, 0.5]}
        for name in ("vibration.mean", "temperature.mean")
    },
}

SECTIONS = (
    "1. Asset inventory",
    "2. Access control",
    "3. Cryptography",
    "4. Logging and monitoring",
    "5. Change management",
    "6. AI risk",
    "6.1. GOVERN",
    "6.2. MAP",
    "6.3. MEASURE",
    "6.4. MANAGE",
)
REFERENCES = (
    "ISO/IEC 27001:2022 A.5.9 Inventory of information and other associated assets",
    "ISO/IEC 27001:2022 A.5.15 Access control",
    "ISO/IEC 27001:2022 A.8.2 Privileged access rights",
    "ISO/IEC 27001:2022 A.8.24 Use of cryptography",
    "ISO/IEC 27001:2022 A.8.15 Logging",
    "ISO/IEC 27001:2022 A.8.16 Monitoring activities",
    "ISO/IEC 27001:2022 A.5.33 Protection of records",
    "ISO/IEC 27001:2022 A.8.32 Change management",
    "NIST AI RMF 1.0 GOVERN 1.6",
    "NIST AI RMF 1.0 MAP 2.1",
    "NIST AI RMF 1.0 MEASURE 2.4",
    "NIST AI RMF 1.0 MANAGE 2.4",
    "NIST AI RMF 1.0 MANAGE 4.1",
)


# -- the plant and its store -----------------------------------------------------------------------


def _plant(tmp_path: Path) -> Path:
    """The mapping, its model files and reference statistics, and the gateway's checkpoint key
    (as a gateway leaves them after its first start); the mapping is signed."""
    base = tmp_path / "plant"
    (base / "models").mkdir(parents=True)
    (base / "models" / "pump_health.onnx").write_bytes(b"onnx v1")
    (base / "models" / "line.onnx").write_bytes(b"onnx line")
    (base / "models" / "reference.json").write_text(json.dumps(REFERENCE))
    mapping = base / "mapping.yaml"
    mapping.write_text(MAPPING)
    (base / "var").mkdir()
    generate_keypair(base / "var" / "audit-ed25519.pem", base / "var" / "audit-ed25519.pem.pub")
    generate_keypair(tmp_path / "approver.pem", tmp_path / "approver.pub")
    sign_mapping(load_private_key(tmp_path / "approver.pem"), mapping)
    return mapping


@contextlib.contextmanager
def _store(backend: str, tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """The store and the URL the command gets (PostgreSQL: with a password in it)."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'bridge.db'}"
        else:
            schema = stack.enter_context(pg_schema("bridge_compliance"))
            with_password = PG_URL.replace("root@", f"root:{PG_PASSWORD}@")
            url = f"{with_password}?options={quote(f'-csearch_path={schema}')}"
        store = open_store(url)
        try:
            yield store, url
        finally:
            store.dispose()


@dataclass(frozen=True)
class Filled:
    admin_id: str
    admin_key: str
    reader_id: str
    key_hashes: tuple[str, ...]
    sha: dict[str, str]  # version -> sha256 of pump-health


def _version(name: str, version: str, state: VersionState, signature: str | None) -> VersionRecord:
    now = time.time()
    return VersionRecord(
        name=name,
        version=version,
        sha256=hashlib.sha256(f"{name}/{version}".encode()).hexdigest(),
        path=f"models/{version}.onnx",
        size_bytes=7,
        signature=signature,
        spec={},
        reference=None,
        metrics={},
        registered_by="test",
        registered_at=now,
        state=state,
        canary_share=None,
        canary_assets=None,
        guard=None,
        state_changed_at=now,
    )


def _prediction(seq: int, now: float) -> Prediction:
    return Prediction(
        id=str(uuid.uuid4()),
        seq=seq,
        asset="pump-a",
        model="pump-health",
        version="1",
        sha256="ab" * 32,
        value="ok",
        score=0.8,
        quality=Quality.GOOD,
        timestamp=now - 900 + seq,
        input_age_s=0.1,
    )


def _fill(store: Store, mapping: Path) -> Filled:
    now = time.time()
    ledger = AuditRepository(store, GATEWAY)
    revision = hashlib.sha256(mapping.read_bytes()).hexdigest()
    ledger.append(NewAuditEntry("system", "system", "gateway.started", f"gateway:{GATEWAY}"))
    ledger.append(
        NewAuditEntry(
            "system",
            "system",
            "mapping.loaded",
            "mapping:mapping.yaml",
            None,
            {"revision": revision},
        )
    )

    keys = ApiKeyRepository(store)
    admin, admin_key = keys.create("ops-admin", Scope.ADMIN)
    reader, _ = keys.create(EVIL, Scope.READ)
    retired, _ = keys.create("old-reader", Scope.READ)
    keys.revoke(retired.key_id)
    # The key repository records its own entries where it does; otherwise the test does.
    created = ledger.page(AuditFilter(action="apikey.created"), 10)
    if not created:
        for record in (admin, reader, retired):
            ledger.append(
                NewAuditEntry("cli:root", "cli", "apikey.created", f"apikey:{record.key_id}")
            )

    registry = RegistryRepository(store, GATEWAY)
    actor = f"key:{admin.key_id}"
    v1 = registry.add(_version("pump-health", "1", "active", "c2lnbmVk"), "mapping")
    v2 = registry.add(_version("pump-health", "2", "registered", None), actor)
    registry.transition("pump-health", "2", move("2", "active", "activate"), actor)
    registry.transition(
        "pump-health",
        "1",
        move("1", "active", "rollback", {"reason": "false alarms on pump-b"}),
        "cli:alice",
    )
    v3 = registry.add(_version("pump-health", "3", "registered", None), actor)
    registry.transition("pump-health", "3", move("3", "shadow", "shadow"), actor)
    registry.add_comparisons(
        [
            Comparison(
                "pump-health",
                "pump-a",
                "shadow",
                "1",
                "3",
                str(uuid.uuid4()),
                "ok",
                "ok",
                0.9,
                i != 0,
                now - 300 + i,
                GATEWAY,
            )
            for i in range(4)
        ]
    )
    registry.add(_version(EVIL, "1", "registered", None), actor)

    alerts = AlertRepository(store, gateway=GATEWAY)
    alerts.add_many(
        [NewAlert(str(uuid.uuid4()), "pump-a", "pump-health", "fault", "ok", 0.93, now - 600)]
    )
    (alert,) = alerts.page(AlertFilter(), 1)
    alerts.acknowledge(alert.id, "alice", admin.key_id, "checked on site")

    predictions = [_prediction(1, now), _prediction(2, now)]
    PredictionRepository(store).add_many(predictions)
    LabelRepository(store).add(
        Feedback(
            predictions[1].id,
            "pump-a",
            "pump-health",
            "reject",
            "alice",
            "rest",
            predictions[1].timestamp,
            value="fault",
            comment="bearing noise",
        )
    )

    ledger.append(
        NewAuditEntry(
            actor,
            "rest",
            "mapping.reloaded",
            "mapping:mapping.yaml",
            {"revision": "0" * 64},
            {"revision": revision},
            "",
        )
    )
    ledger.append(
        NewAuditEntry(
            "system",
            "system",
            "mapping.refused",
            "mapping:mapping.yaml",
            {"revision": revision},
            None,
            f"mapping.yaml:3: {EVIL}",
        )
    )
    ledger.append(
        NewAuditEntry(
            "system",
            "system",
            "integrity.mismatch",
            "model:pump-health/1",
            {"sha256": v1.sha256},
            {"sha256": "missing", "withheld": True},
            "model file models/1.onnx is not the one approved",
        )
    )
    # The gateway's closing checkpoint, signed with its own key: the chain ends signed.
    head = ledger.head()
    assert head is not None
    key = load_private_key(mapping.parent / "var" / "audit-ed25519.pem")
    at = format_time(round(time.time() * 1_000_000))
    ledger.add_checkpoint(sign_checkpoint(key, head[0], head[1], at, GATEWAY))

    with store.sessions() as session:
        hashes = tuple(session.scalars(select(ApiKeyRow.key_hash)))
    return Filled(
        admin.key_id,
        admin_key,
        reader.key_id,
        hashes,
        {"1": v1.sha256, "2": v2.sha256, "3": v3.sha256},
    )


def _report(
    mapping: Path, url: str, output: Path, *extra: str, env: dict[str, str] | None = None
) -> Result:
    args = ["compliance", "report", "--mapping", str(mapping), "--store", url, "-o", str(output)]
    environ = {**ENV, PUBLIC_KEY_VARIABLE: str(mapping.parent.parent / "approver.pub")}
    return CliRunner().invoke(main, [*args, *extra], env={**environ, **(env or {})})


class _Markup(HTMLParser):
    """Every element and attribute name of a page, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def _assert_no_secret(text: str, filled: Filled) -> None:
    for secret in (*ENV.values(), PG_PASSWORD, filled.admin_key, *filled.key_hashes):
        assert secret not in text, secret


# -- the report ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_report_holds_each_section_with_its_facts_and_no_secret(
    backend: str, tmp_path: Path
) -> None:
    mapping = _plant(tmp_path)
    with _store(backend, tmp_path) as (store, url):
        filled = _fill(store, mapping)
        entries = AuditRepository(store, "reader").count()
        md_file, html_file = tmp_path / "out" / "report.md", tmp_path / "out" / "report.html"
        md_file.parent.mkdir()
        for output in (md_file, html_file):
            done = _report(mapping, url, output)
            assert done.exit_code == OK, done.output
            assert f"wrote {output}" in done.stdout
            assert f"audit chain verified ({entries} entries)" in done.stdout
    md = md_file.read_text(encoding="utf-8")
    page = html_file.read_text(encoding="utf-8")
    revision = hashlib.sha256(mapping.read_bytes()).hexdigest()

    for text in (md, page):
        for title in SECTIONS:
            assert title in text, title
        for reference in REFERENCES:
            assert reference in text, reference
        # The header.
        assert GATEWAY in text and revision in text and "Bridge version" in text
        assert "Generated at (UTC)" in text and "Period" in text
        # Asset inventory: the registry's versions, their sha256 and signatures.
        for sha in filled.sha.values():
            assert sha in text
        # Logging: the chain, verified with the gateway's key pinned, no unsigned tail.
        assert f"verified: {entries} entries (seq 1-{entries})" in text
        assert "pinned: only checkpoints signed by the 1 trusted key(s) count" in text
        assert "0 entr(ies) after the last valid checkpoint" in text
        # MEASURE: the alert acknowledged 600 s after it was raised; 1 of 2 predictions
        # overridden; the shadow agreed 3 times of 4.
        assert "10.0 min" in text
        assert "50.0 %" in text and "75.0 %" in text
        assert "1 of 2 model(s) with drift monitoring (pump-health)" in text
        # Cryptography: the mapping's signature verifies; the REST API is plain HTTP on
        # loopback, the Modbus line has no security layer (and is reachable: warned).
        assert "mapping.yaml.sig verifies for revision" in text
        assert "OPC UA Basic256Sha256 / SignAndEncrypt" in text
        assert "none: Modbus has no security layer" in text
        # Change management: who, when, how and why.
        assert "cli:alice" in text and "false alarms on pump-b" in text
        assert f"key:{filled.admin_id}" in text
        # MANAGE: the withheld model.
        assert "integrity.mismatch (withheld)" in text
        _assert_no_secret(text, filled)

    # Markdown: tables, rows as written.
    assert f"| {filled.admin_id} | ops-admin | admin |" in md
    assert f"| pump-health | 1 | active | {filled.sha['1']} | signed |" in md
    assert f"| pump-health | 2 | retired | {filled.sha['2']} | unsigned |" in md
    assert "| Mean time to acknowledge (MTTA), alerts | 10.0 min |" in md
    assert "| Autonomous decision coverage | 50.0 % of predictions" in md
    assert "| operator1 | password (not shown) | operator |" in md
    # Redacted, and `*` escaped: a Markdown renderer shows *** rather than emphasis.
    assert "https://\\*\\*\\*@mes.example.com/api/events?token=\\*\\*\\*" in md
    # HTML: the same facts in cells.
    assert f"<td>{filled.admin_id}</td><td>ops-admin</td><td>admin</td>" in page
    assert f"<td>{filled.sha['2']}</td><td>unsigned</td>" in page
    assert "<th>Mean time to acknowledge (MTTA), alerts</th><td>10.0 min</td>" in page


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_names_from_people_stay_text_and_the_page_loads_nothing(
    backend: str, tmp_path: Path
) -> None:
    mapping = _plant(tmp_path)
    with _store(backend, tmp_path) as (store, url):
        filled = _fill(store, mapping)
        for name in ("r.md", "r.html"):
            assert _report(mapping, url, tmp_path / name).exit_code == OK
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # A model, an API key and a refusal's reason carry the name: none stays markup.
    assert "<script" not in md.lower() and "<script" not in page.lower()
    assert md.count(escaped) >= 3 and page.count(escaped) >= 3
    assert f"<td>{filled.reader_id}</td><td>{escaped}</td><td>read</td>" in page
    # One self-contained page: style inline, nothing loaded, nothing run.
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    parsed = _Markup()
    parsed.feed(page)
    assert parsed.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "h3",
        "p",
        "strong",
        "table",
        "caption",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "div",
        "ul",
        "li",
    }, parsed.tags
    assert parsed.attributes <= {"lang", "charset", "http-equiv", "content", "name", "class", "id"}
    assert "@import" not in page and "url(" not in page


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_tampered_chain_is_reported_broken_at_its_entry_and_the_command_fails(
    backend: str, tmp_path: Path
) -> None:
    mapping = _plant(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with _store(backend, tmp_path) as (store, url):
        filled = _fill(store, mapping)
        assert _report(mapping, url, out / "report.html").exit_code == OK
        before = (out / "report.html").read_text(encoding="utf-8")
        # Someone with database access rewrites the reason of entry 2 (mapping.loaded).
        with store.engine.begin() as conn:
            conn.execute(
                update(AuditEntryRow).where(AuditEntryRow.seq == 2).values(reason="edited")
            )
        for name in ("report.html", "report.md"):
            done = _report(mapping, url, out / name)
            assert done.exit_code == FAILED, done.output
            assert "audit chain BROKEN at entry 2 (changed)" in done.stdout
            assert "error: The audit chain is BROKEN at entry 2 (changed)" in done.stderr
            assert f"the report was written and says so: {out / name}" in done.stderr
    for name in ("report.html", "report.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert "BROKEN at entry 2 (changed): entry 2 was changed after it was written" in text
        assert "FAIL" in text
        _assert_no_secret(text, filled)
    # The earlier report was replaced whole; no temporary file is left beside it.
    assert (out / "report.html").read_text(encoding="utf-8") != before
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


def test_a_mapping_edited_after_it_was_signed_fails_the_report(tmp_path: Path) -> None:
    mapping = _plant(tmp_path)
    with _store("sqlite", tmp_path) as (store, url):
        _fill(store, mapping)
        mapping.write_text(MAPPING.replace("integrity_s: 30", "integrity_s: 0"))
        done = _report(mapping, url, tmp_path / "r.md")
        assert done.exit_code == FAILED, done.output
        unsigned = _report(mapping, url, tmp_path / "u.md", env={PUBLIC_KEY_VARIABLE: ""})
        assert unsigned.exit_code == OK, unsigned.output
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "does NOT verify" in text and "mapping.yaml.sig does not sign this content" in text
    assert "at start and after each reload only (integrity_s: 0)" in text
    # Without the variable nothing is required: said, and warned, not failed.
    relaxed = (tmp_path / "u.md").read_text(encoding="utf-8")
    assert f"not required at report time ({PUBLIC_KEY_VARIABLE} is not set)" in relaxed


def test_a_period_narrows_what_is_counted(tmp_path: Path) -> None:
    mapping = _plant(tmp_path)
    with _store("sqlite", tmp_path) as (store, url):
        _fill(store, mapping)
        entries = AuditRepository(store, "reader").count()
        done = _report(
            mapping, url, tmp_path / "old.md", "--since", "2020-01-01", "--until", "2020-02-01"
        )
        assert done.exit_code == OK, done.output
    text = (tmp_path / "old.md").read_text(encoding="utf-8")
    assert "2020-01-01T00:00:00Z to 2020-02-01T00:00:00Z (31.0 days)" in text
    assert "| Entries in the period | 0 |" in text
    assert "| Alerts in the period | 0 raised" in text
    assert "*No model change in the period.*" in text
    # The chain's verification is about the whole ledger, not the period.
    assert f"verified: {entries} entries" in text


def test_an_auditors_copy_with_the_public_key_only_pins_the_signer(tmp_path: Path) -> None:
    mapping = _plant(tmp_path)
    with _store("sqlite", tmp_path) as (store, url):
        _fill(store, mapping)
        # The private key stays on the gateway; the auditor got the mapping and the .pub.
        (mapping.parent / "var" / "audit-ed25519.pem").unlink()
        done = _report(mapping, url, tmp_path / "r.md")
        assert done.exit_code == OK, done.output
        # Without it nothing vouches for the checkpoint's signer: the chain does not verify.
        (mapping.parent / "var" / "audit-ed25519.pem.pub").unlink()
        unpinned = _report(mapping, url, tmp_path / "none.md")
        assert unpinned.exit_code == FAILED, unpinned.output
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "pinned: only checkpoints signed by the 1 trusted key(s) count" in text
    assert "| Audit checkpoint key (Ed25519) | absent here (var/audit-ed25519.pem); its " in text
    failed = (tmp_path / "none.md").read_text(encoding="utf-8")
    assert "(untrusted_key)" in failed and "pinned to no key" in failed


def test_usage_errors_are_refused_before_anything_is_opened(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mapping.yaml"
    done = CliRunner().invoke(
        main, ["compliance", "report", "--mapping", str(missing), "-o", str(tmp_path / "r.pdf")]
    )
    assert done.exit_code == USAGE
    assert "one of .htm, .html, .markdown, .md (not .pdf)" in done.stderr
    backwards = CliRunner().invoke(
        main,
        [
            "compliance",
            "report",
            "--mapping",
            str(missing),
            "-o",
            str(tmp_path / "r.md"),
            "--since",
            "2024-02-01",
            "--until",
            "2024-01-01",
        ],
    )
    assert backwards.exit_code == USAGE
    assert "starts (2024-02-01T00:00:00Z) after it ends" in backwards.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_bridge_command_writes_the_report(tmp_path: Path) -> None:
    mapping = _plant(tmp_path)
    with _store("sqlite", tmp_path) as (store, url):
        _fill(store, mapping)
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    env.pop(PUBLIC_KEY_VARIABLE, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "compliance",
            "report",
            "--mapping",
            str(mapping),
            "--store",
            url,
            "-o",
            str(tmp_path / "report.html"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == OK, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'report.html'} (html): audit chain verified")
    assert (tmp_path / "report.html").stat().st_mode & 0o077 == 0  # the owner's only
