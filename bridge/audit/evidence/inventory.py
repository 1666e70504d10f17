"""Section 1, asset inventory: sources, assets, models, registered versions, outputs."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from bridge.store.registry import VersionRecord

from .controls import family
from .formatting import _shown_path, utc
from .interfaces import _endpoint
from .model import Block, Facts, Note, Section, _table

if TYPE_CHECKING:
    from .gather import _Evidence


def _model_signed(record: VersionRecord) -> str:
    return "signed" if record.signature else "unsigned"


def _inventory(ev: _Evidence) -> Section:
    m = ev.mapping
    tags_per_source = Counter(t.source for t in m.tags.values())
    models_per_asset: dict[str, list[str]] = {}
    for model in m.models.values():
        for asset in model.assets:
            models_per_asset.setdefault(asset, []).append(model.name)
    registered = {r.name for r in ev.versions}
    facts = Facts(
        (
            ("Sources", str(len(m.sources))),
            ("Assets", str(len(m.assets))),
            ("Tags", str(len(m.tags))),
            ("Models in the mapping", str(len(m.models))),
            (
                "Model versions in the registry",
                f"{len(ev.versions)} (of {len(registered)} model(s))",
            ),
            ("Outputs", str(len(m.outputs))),
            ("Mapping revision", f"{m.revision} (sha256 of {m.path.name})"),
        )
    )
    sources = _table(
        "Sources",
        ("Source", "Kind", "Endpoint", "Tags"),
        (
            (name, src.kind, _endpoint(src.kind, src.settings), str(tags_per_source[name]))
            for name, src in sorted(m.sources.items())
        ),
    )
    assets = _table(
        "Assets",
        ("Asset", "Tags", "Models"),
        (
            (name, str(len(tags)), ", ".join(models_per_asset.get(name, [])) or "-")
            for name, tags in sorted(m.assets.items())
        ),
    )
    models = _table(
        "Models in the mapping",
        ("Model", "Version", "File", "Pinned sha256", "Assets"),
        (
            (
                name,
                model.version,
                _shown_path(model.path, ev.base),
                model.sha256 or "not pinned",
                str(len(model.assets)),
            )
            for name, model in sorted(m.models.items())
        ),
    )
    registry = _table(
        "Model versions in the registry",
        ("Model", "Version", "State", "sha256", "Signature", "Registered by", "Registered at"),
        (
            (
                r.name,
                r.version,
                r.state,
                r.sha256,
                _model_signed(r),
                r.registered_by,
                utc(r.registered_at),
            )
            for r in ev.versions
        ),
        empty="No version registered.",
    )
    outputs = _table(
        "Outputs",
        ("Output", "Kind", "Endpoint"),
        (
            (name, out.kind, _endpoint(out.kind, out.settings))
            for name, out in sorted(m.outputs.items())
        ),
    )
    blocks: list[Block] = [facts, sources, assets, models, registry, outputs]
    if m.needs:
        waiting = "; ".join(f"{var} ({', '.join(keys)})" for var, keys in sorted(m.needs.items()))
        blocks.append(
            Note(
                "Made without these environment variables (their values are not known to the "
                f"report; the keys that use them are shown as written): {waiting}."
            )
        )
    return Section(family("inventory"), tuple(blocks))
