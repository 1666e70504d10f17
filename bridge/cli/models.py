"""``bridge models ...``: the model registry from the command line.

Works on the store of a mapping (``--mapping``, which also brings its configured public key and
checks each version against the mapping's model of that name) or on a database URL
(``--store``, no such check: the gateways refuse an unfitting version when they load it and
mark it ``refused``), while gateways run or not: they pick changes up within
``gateway.models.poll_s``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge.cli.actor import cli_actor
from bridge.cli.report import EXIT_FAILED, fail, fail_with
from bridge.cli.store import opened_store, store_options
from bridge.errors import BridgeError
from bridge.store.registry import RegistryRepository, VersionRecord

__all__ = ["models"]

F = TypeVar("F", bound=Callable[..., Any])


def _store_options(fn: F) -> F:
    fn = store_options("Use the store (and public key) of this mapping.")(fn)
    fn = click.option(
        "--public-key",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help="Ed25519 public key (PEM): refuse versions not signed with its private key.",
    )(fn)
    return fn


def _models_dir_option(fn: F) -> F:
    return click.option(
        "--models-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="With --store: the only folder model files may be registered from (with "
        "--mapping it is gateway.models.directory, default `models` beside the mapping).",
    )(fn)


@contextmanager
def _service(
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
    models_dir: Path | None = None,
    *,
    create: bool = False,
) -> Iterator[Any]:
    from dataclasses import replace

    from bridge.lifecycle.policy import ModelPolicy, policy_of
    from bridge.lifecycle.service import RegistryService
    from bridge.lifecycle.signature import load_public_key

    if mapping is not None and models_dir is not None:
        raise click.UsageError(
            "--models-dir goes with --store; with --mapping set gateway.models.directory"
        )
    key = load_public_key(public_key) if public_key is not None else None
    with opened_store(mapping, store_url, create=create) as opened:
        models: dict[str, Any] = {}
        if opened.mapping is not None:
            models = dict(opened.mapping.models)  # versions of these names must fit them
            policy = policy_of(opened.mapping)
            if key is not None:
                policy = replace(policy, public_key=key)
        else:
            policy = ModelPolicy(public_key=key, directory=models_dir)
        yield RegistryService(RegistryRepository(opened.store), policy, models)


def _need_models_dir(store_url: str | None, models_dir: Path | None) -> None:
    if store_url is not None and models_dir is None:
        raise click.UsageError(
            "with --store give --models-dir DIR, the folder model files are registered from "
            "(or use --mapping, whose gateway.models.directory says it)"
        )


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _placement(r: VersionRecord) -> str:
    if r.state != "canary":
        return ""
    if r.canary_assets is not None:
        return f" assets={','.join(r.canary_assets)}"
    return f" share={r.canary_share:g}%"


def _line(r: VersionRecord) -> str:
    return (
        f"{r.name}\t{r.version}\t{r.state}{_placement(r)}\t{r.sha256[:12]}\t"
        f"{_when(r.registered_at)}\t{r.registered_by}"
    )


def _as_dict(r: VersionRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(r)


@click.group()
def models() -> None:
    """The model registry: register, activate, roll back, shadow, canary, promote, quantize."""


@models.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name (the mapping's `models:` key).")
@click.option("--version", "version", required=True, help="Version label, unique per name.")
@click.option(
    "--reference",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Reference statistics of the training data (JSON, bridge-reference/1).",
)
@click.option(
    "--signature",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Base64 Ed25519 signature file (from `bridge models sign`).",
)
@click.option("--metrics", help="Training metrics as JSON, e.g. '{\"accuracy\": 0.97}'.")
@_models_dir_option
@_store_options
def register(
    file: Path,
    name: str,
    version: str,
    reference: Path | None,
    signature: Path | None,
    metrics: str | None,
    models_dir: Path | None,
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
) -> None:
    """Register FILE as a new version (not serving until activated, shadowed or canaried).
    FILE must be a regular file in the models directory."""
    _need_models_dir(store_url, models_dir)
    try:
        parsed = json.loads(metrics) if metrics else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metrics") from exc
    try:
        with _service(mapping, store_url, public_key, models_dir, create=True) as svc:
            r = svc.register(
                file.absolute(),
                name,
                version,
                actor=cli_actor(),
                reference=reference,
                signature=signature.read_text().strip() if signature else None,
                metrics=parsed,
            )
    except BridgeError as err:
        fail(err)
    click.echo(f"registered {r.name} {r.version} sha256={r.sha256}")


@models.command("list")
@click.option("--name", help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_store_options
def list_(
    name: str | None,
    as_json: bool,
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
) -> None:
    """Every registered version: name, version, state, sha256, registered at/by."""
    try:
        with _service(mapping, store_url, public_key) as svc:
            rows = svc.list(name)
    except BridgeError as err:
        fail(err)
    for r in rows:
        click.echo(json.dumps(_as_dict(r)) if as_json else _line(r))


@models.command()
@click.argument("name")
@click.argument("version", required=False)
@_store_options
def show(
    name: str,
    version: str | None,
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
) -> None:
    """One version in full (JSON); without VERSION the active one."""
    try:
        with _service(mapping, store_url, public_key) as svc:
            r = svc.show(name, version)
            agreement = svc.repo.agreement(name, r.version)
            refusal = svc.refusal(r)
    except BridgeError as err:
        fail(err)
    out = _as_dict(r)
    if refusal is not None:
        out["refusal"] = refusal
    out["agreement"] = {a.asset: {"compared": a.compared, "rate": a.rate} for a in agreement}
    click.echo(json.dumps(out, indent=2))


def _state_command(
    verb: str, fn: Callable[[Any, str, str | None], VersionRecord], needs_version: bool
) -> None:
    @models.command(verb, help=_STATE_HELP[verb])
    @click.argument("name")
    @click.argument("version", required=needs_version)
    @_store_options
    def cmd(
        name: str,
        version: str | None,
        mapping: Path | None,
        store_url: str | None,
        public_key: Path | None,
    ) -> None:
        try:
            with _service(mapping, store_url, public_key) as svc:
                r = fn(svc, name, version)
        except BridgeError as err:
            fail(err)
        click.echo(f"{r.name} {r.version} is now {r.state}")


_STATE_HELP = {
    "activate": "Make VERSION the active version of NAME (serves every asset).",
    "shadow": "Run VERSION beside the active one on the same batches; publish nothing.",
    "promote": "Make the shadow or canary version of NAME the active one.",
    "rollback": "End the candidate of NAME; without one, reactivate the previous version.",
}


_state_command("activate", lambda s, n, v: s.activate(n, v, cli_actor()), True)
_state_command("shadow", lambda s, n, v: s.shadow(n, v, cli_actor()), True)
_state_command("promote", lambda s, n, _v: s.promote(n, cli_actor()), False)
_state_command("rollback", lambda s, n, _v: s.rollback(n, cli_actor()), False)


def _share(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().rstrip("%"))
    except ValueError as exc:
        raise click.BadParameter("a percentage such as 10% or 12.5", param_hint="--share") from exc


@models.command()
@click.argument("name")
@click.argument("version")
@click.option("--share", help="Percentage of assets, e.g. 10%.")
@click.option("--assets", help="Comma-separated asset ids instead of a share.")
@click.option("--max-disagreement", type=click.FloatRange(0, 1), help="Roll back above this.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), help="Roll back above this.")
@click.option("--min-samples", type=click.IntRange(1), help="Compared rows before guards act.")
@_store_options
def canary(
    name: str,
    version: str,
    share: str | None,
    assets: str | None,
    max_disagreement: float | None,
    max_error_rate: float | None,
    min_samples: int | None,
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
) -> None:
    """Serve VERSION to a share (stable hash of asset id) or a list of assets."""
    guard = {
        k: float(v)
        for k, v in (
            ("max_disagreement", max_disagreement),
            ("max_error_rate", max_error_rate),
            ("min_samples", min_samples),
        )
        if v is not None
    }
    listed = [a.strip() for a in assets.split(",")] if assets is not None else None
    try:
        with _service(mapping, store_url, public_key) as svc:
            r = svc.canary(
                name, version, cli_actor(), share=_share(share), assets=listed, guard=guard or None
            )
    except BridgeError as err:
        fail(err)
    click.echo(f"{r.name} {r.version} is now canary{_placement(r)}")
    if mapping is not None:
        _echo_canary_assets(mapping, r)


def _echo_canary_assets(mapping: Path, r: VersionRecord) -> None:
    """Say which of the mapping's assets the canary serves, and warn when it serves none."""
    from bridge.config.loader import load_mapping
    from bridge.lifecycle.canary import canary_assets

    model = load_mapping(mapping).models.get(r.name)
    if model is None:
        click.echo(
            f"warning: the mapping has no model {r.name}: the canary serves no asset", err=True
        )
        return
    chosen = canary_assets(r.name, model.assets, r.canary_share, r.canary_assets)
    total = len(model.assets)
    if chosen:
        click.echo(f"serves {len(chosen)} of {total} assets: {', '.join(sorted(chosen))}")
    elif r.canary_assets is not None:
        click.echo(f"warning: none of the listed assets is served by {r.name}", err=True)
    else:
        least = 50 / total if total else 100
        click.echo(
            f"warning: a share of {r.canary_share:g}% covers none of the {total} assets of "
            f"{r.name}; give at least {least:g}% or list assets with --assets",
            err=True,
        )


@models.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="Rows of model inputs (.csv or .npy) to calibrate on.",
)
@click.option(
    "--golden",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Rows to measure agreement on (default: the calibration rows).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Write the INT8 model here.",
)
@click.option(
    "--method",
    type=click.Choice(["static", "dynamic"]),
    default="static",
    show_default=True,
    help="static: activations calibrated on the rows; dynamic: measured at run time.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="Refuse to register below this agreement with the float model.",
)
@click.option("--name", help="Register the INT8 model under this name (needs --version).")
@click.option("--version", "version", help="Version to register the INT8 model as.")
@_models_dir_option
@_store_options
def quantize(
    file: Path,
    calibration: Path,
    golden: Path | None,
    out: Path,
    method: str,
    min_agreement: float,
    name: str | None,
    version: str | None,
    models_dir: Path | None,
    mapping: Path | None,
    store_url: str | None,
    public_key: Path | None,
) -> None:
    """Make an INT8 copy of FILE; report size, latency and agreement; optionally register it
    (then OUT must be in the models directory)."""
    from bridge.lifecycle.quantize import load_rows
    from bridge.lifecycle.quantize import quantize as run_quantize

    if (name is None) != (version is None):
        raise click.UsageError("--name and --version go together")
    if name is not None:
        _need_models_dir(store_url, models_dir)
    try:
        cal = load_rows(calibration)
        gold = load_rows(golden) if golden is not None else None
        report = run_quantize(file, out, cal, gold, "dynamic" if method == "dynamic" else "static")
    except BridgeError as err:
        fail(err)
    for line in report.lines():
        click.echo(line)
    if name is None or version is None:
        return
    if report.agreement < min_agreement:
        fail_with(
            f"agreement {report.agreement:.4f} is below --min-agreement "
            f"{min_agreement}: not registering {out}",
            EXIT_FAILED,
        )
    metrics = {
        "quantized_from": str(file),
        "quantization": method,
        "agreement_with_float": report.agreement,
        "golden_rows": report.golden_rows,
    }
    try:
        with _service(mapping, store_url, public_key, models_dir, create=True) as svc:
            r = svc.register(out.absolute(), name, version, actor=cli_actor(), metrics=metrics)
    except BridgeError as err:
        fail(err)
    click.echo(f"registered {r.name} {r.version} sha256={r.sha256}")


@models.command()
@click.option(
    "--private",
    "private_out",
    type=click.Path(path_type=Path),
    required=True,
    help="Write the private key here (keep it secret).",
)
@click.option(
    "--public",
    "public_out",
    type=click.Path(path_type=Path),
    required=True,
    help="Write the public key here (gateway.models.public_key).",
)
def keygen(private_out: Path, public_out: Path) -> None:
    """Make an Ed25519 key pair (PEM) for signing model files; never overwrites a file."""
    from bridge.lifecycle.signature import generate_keypair

    try:
        generate_keypair(private_out, public_out)
    except BridgeError as err:
        fail(err)
    click.echo(f"wrote {private_out} (keep it secret) and {public_out}")


@models.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--key",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Ed25519 private key (PEM, from `bridge models keygen`).",
)
@click.option("--name", required=True, help="Model name the signature is for.")
@click.option("--version", "version", required=True, help="Version the signature is for.")
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), help="The signature file; default: FILE.sig"
)
def sign(file: Path, key: Path, name: str, version: str, out: Path | None) -> None:
    """Sign FILE as version VERSION of model NAME (name, version and sha256 are signed, see
    bridge.lifecycle.signature) with an Ed25519 private key; writes a base64 signature file."""
    from bridge.inference.model import file_sha256
    from bridge.lifecycle.signature import load_private_key, sign_model

    try:
        signature = sign_model(load_private_key(key), name, version, file_sha256(file))
    except BridgeError as err:
        fail(err)
    target = out or file.with_name(file.name + ".sig")
    target.write_text(signature + "\n")
    click.echo(f"wrote {target} ({name} {version})")
