"""Section 3, cryptography: model, mapping and checkpoint signatures, interface protection."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from bridge.config.signing import PUBLIC_KEY_VARIABLE, check_mapping_signature, signature_path
from bridge.ed25519 import SignatureError, load_private_key, load_public_key, public_key_text
from bridge.errors import ConfigError

from .controls import family
from .formatting import _listed, _shown_path
from .model import Block, Facts, Finding, Note, Section, _table

if TYPE_CHECKING:
    from .gather import _Evidence


def _checkpoint_key(ev: _Evidence) -> str:
    path = ev.relative(ev.mapping.gateway.audit.signing_key)
    shown = _shown_path(path, ev.base)
    if not path.exists():
        half = path.with_name(path.name + ".pub")
        if half.exists():
            try:
                text = public_key_text(load_public_key(half))
            except SignatureError as exc:
                return f"absent here ({shown}); its public half is unreadable: {exc}"
            return f"absent here ({shown}); its public half is: public key {text}"
        return (
            f"absent ({shown}): a gateway makes it at its first start; until then it signs "
            "no checkpoint"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        public = public_key_text(load_private_key(path).public_key())
    except SignatureError as exc:
        return f"present ({shown}) but unreadable: {exc}"
    private = "readable by its owner only" if mode & 0o077 == 0 else f"mode {mode:o}: NOT private"
    return f"present ({shown}, {private}); public key {public}"


def _model_signatures(ev: _Evidence) -> str:
    g = ev.mapping.gateway
    key = g.models.public_key
    if key is not None:
        return (
            f"required: every version must be signed with the key of gateway.models.public_key "
            f"({key}); an unsigned or wrongly signed version is refused"
        )
    if g.durability.profile == "production":
        return (
            "required by the production profile, but gateway.models.public_key is not set: "
            "every version is refused"
        )
    return "not required (gateway.models.public_key is not set)"


def _mapping_signature(ev: _Evidence) -> str:
    m = ev.mapping
    sig = signature_path(m.path)
    key = ev.env.get(PUBLIC_KEY_VARIABLE, "")
    if not key:
        there = "present" if sig.exists() else "absent"
        ev.findings.append(
            Finding(
                "warn",
                f"Mapping signatures are not required where this report was made "
                f"({PUBLIC_KEY_VARIABLE} is not set); a gateway enforces them only with it.",
            )
        )
        return (
            f"not required at report time ({PUBLIC_KEY_VARIABLE} is not set); {sig.name} "
            f"{there}, not verified"
        )
    try:
        check_mapping_signature(m.path, m.revision, ev.env)
    except ConfigError as err:
        why = "; ".join(i.message for i in err.issues)
        ev.findings.append(Finding("fail", f"The mapping's signature does not verify ({why})."))
        return f"required ({PUBLIC_KEY_VARIABLE}={key}); does NOT verify: {why}"
    return (
        f"required ({PUBLIC_KEY_VARIABLE}={key}); {sig.name} verifies for revision "
        f"{m.revision[:12]}"
    )


def _cryptography(ev: _Evidence) -> Section:
    signed = sum(1 for r in ev.versions if r.signature)
    trusted = ev.mapping.gateway.audit.trusted_keys
    facts = Facts(
        (
            ("Model signatures (Ed25519)", _model_signatures(ev)),
            ("Signed versions in the registry", f"{signed} of {len(ev.versions)}"),
            ("Mapping signature (Ed25519)", _mapping_signature(ev)),
            ("Audit checkpoint key (Ed25519)", _checkpoint_key(ev)),
            (
                "Other gateways' checkpoint keys trusted",
                _listed(trusted) if trusted else "none (gateway.audit.trusted_keys)",
            ),
            ("Audit chain", "sha256 over each entry's canonical encoding, linked by prev_hash"),
        )
    )
    links = _table(
        "Interfaces",
        ("Interface", "Direction", "Endpoint", "Protection", "Details"),
        (
            (link.name, link.direction, link.endpoint, link.protection, link.detail or "-")
            for link in ev.links
        ),
    )
    if ev.mapping.gateway.models.public_key is None:
        ev.findings.append(Finding("warn", f"Model signatures: {_model_signatures(ev)}."))
    exposed = [x for x in ev.links if x.exposed and x.verdict in ("none", "weak")]
    blocks: list[Block] = [links, facts]
    if exposed:
        names = ", ".join(f"{x.name} ({x.protection})" for x in exposed)
        text = f"Network interfaces without (full) encryption: {names}."
        blocks.insert(1, Note(text, "warn"))
        ev.findings.append(Finding("warn", text))
    return Section(family("cryptography"), tuple(blocks))
