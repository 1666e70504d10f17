"""Hot reload of the mapping: SIGHUP, ``POST /api/v1/reload`` (``bridge reload``) and the
optional file watch read the mapping file again and apply the difference in place.

The new file is checked exactly as ``bridge validate`` checks it (``bridge.prepare``); an
invalid one raises ``ConfigError`` with its ``file:line`` issues and nothing running is touched.
A valid one is compared with the running mapping (``diff_mappings``) and applied:

- sources: an added source starts, a removed one stops; a changed one (settings, or the list
  of its tags) is restarted alone: a new session and subscription. An unchanged source is not
  touched: same supervisor, same session, same subscription.
- tags: the tag table is rebuilt, and every tag whose definition did not change keeps its
  value, quality and window (its ring is the same object while the models read it over the
  same window length and sample count; otherwise its window starts over).
- models: an added model starts, a removed one stops. A changed model whose file, version,
  labels, period and trigger are the same (assets or features changed) is updated in place:
  its runner goes on with the next tick, no gap. Any other change rebuilds its runner, which
  goes on with the same sequence numbers and runs at once.
- lineage: predictions stored from now on carry the new mapping revision (sha256).
- drift and explanations: a model added or changed gets its ``ModelInsight`` (and its
  ``drift.webhook`` relay) built by the start-up code (``Insight.attach``) before its next
  tick; a changed model's drift windows start over. A removed model's parts stop.
- outputs (``bridge.runtime.outputs``): an added output starts, a removed one stops, a
  changed one is restarted alone; an unchanged one is the same object (the HMI server keeps
  its clients' sessions and subscriptions, an MES destination its relay). A removed
  destination's undelivered events stay in the store's outbox: the summary counts them
  (``outbox_kept``). Outputs that follow the (asset, model) pairs (``FollowsSlots``) get the
  new pairs before any model serves them: the HMI server adds the nodes of an added asset or
  model at run time (the node ids and browse paths a start would make) and marks those of a
  removed one ``BadConfigurationError`` before deleting them; the MES bodies take the new
  units; the stored alerts and the destinations' event rules follow too. An output that
  cannot start (its port taken) is logged, named in ``restart_needed`` and tried again by
  the next reload.
- ``gateway:``: changed keys are named (``gateway.api.port``, ...). ``retention.*`` (but
  ``disk_path``), ``probes.*``, ``default_max_age_s`` (through the tags) and
  ``reload.watch_interval_s`` apply in place; every other key is listed in ``restart_needed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from bridge.api.reloadable import ReloadSummary, ReloadUnavailable
from bridge.api.view import ModelInfo
from bridge.audit.ledger import AuditLedger
from bridge.config.resolved import Mapping
from bridge.config.spec import GatewaySettings
from bridge.errors import BridgeError, ConfigError
from bridge.lifecycle.shadow import CandidateComparison
from bridge.prepare import Prepared, prepare
from bridge.runtime.actions import definition_of
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.insight_wiring import Insight
from bridge.runtime.live_models import LiveModels, stored_comparison
from bridge.runtime.outputs import Outputs, OutputsChange
from bridge.runtime.parts import model_runner, source_supervisor, source_tags
from bridge.runtime.runner import ModelRunner
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagTable
from bridge.runtime.tasks import TaskSet
from bridge.runtime.view import RuntimeView
from bridge.store.auditchain import NewAuditEntry
from bridge.store.registry import RegistryRepository
from bridge.store.sequences import SequenceRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, TagSample

__all__ = ["MappingDiff", "Reloader", "diff_mappings", "retable"]

log = structlog.get_logger(__name__)

Job = tuple[str, Callable[[], Coroutine[Any, Any, Any]]]
SECTIONS = ("sources", "tags", "assets", "models", "outputs")


# ``gateway:`` keys a reload applies in place (a key, or every key under a prefix ending in
# "."); every other changed key is reported under ``restart_needed``. The tags' resolved
# ``max_age_s`` carries ``default_max_age_s``: the changed tags apply it.
GATEWAY_IN_PLACE = (
    "gateway.retention.",
    "gateway.probes.",
    "gateway.default_max_age_s",
    "gateway.reload.watch_interval_s",
)
# ... except these (the watched folder is chosen at start).
GATEWAY_RESTART = ("gateway.retention.disk_path",)


def gateway_in_place(key: str) -> bool:
    if key in GATEWAY_RESTART:
        return False
    return any(key.startswith(p) if p.endswith(".") else key == p for p in GATEWAY_IN_PLACE)


@dataclass(frozen=True)
class MappingDiff:
    """Names per section (``SECTIONS``) added, removed and changed from ``old`` to ``new``;
    ``gateway``: the ``gateway:`` keys that changed (``gateway.api.port``, ...)."""

    added: dict[str, tuple[str, ...]]
    removed: dict[str, tuple[str, ...]]
    changed: dict[str, tuple[str, ...]]
    gateway: tuple[str, ...] = ()
    # Write-back actions added, removed or changed: the running ones stay until a restart.
    actions: tuple[str, ...] = ()

    def changes(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for what, names in (("added", self.added), ("removed", self.removed)):
            for section in SECTIONS:
                if names[section]:
                    out[f"{section}.{what}"] = list(names[section])
        for section in SECTIONS:
            if self.changed[section]:
                out[f"{section}.changed"] = list(self.changed[section])
        applied = [k for k in self.gateway if gateway_in_place(k)]
        if applied:
            out["gateway.changed"] = applied
        return out

    def restart_needed(self) -> list[str]:
        return [k for k in self.gateway if not gateway_in_place(k)] + [
            f"actions.{name}" for name in self.actions
        ]


def gateway_keys(a: BaseModel, b: BaseModel, prefix: str = "gateway") -> list[str]:
    """The dotted keys of settings that differ between ``a`` and ``b`` (the leaves)."""
    keys: list[str] = []
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        if x == y:
            continue
        if isinstance(x, BaseModel) and type(x) is type(y):
            keys.extend(gateway_keys(x, y, f"{prefix}.{name}"))
        else:
            keys.append(f"{prefix}.{name}")
    return keys


def _compare(
    old: dict[str, Any], new: dict[str, Any], same: Callable[[str], bool]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and not same(n))
    return added, removed, changed


def diff_mappings(old: Prepared, new: Prepared) -> MappingDiff:
    a, b = old.mapping, new.mapping

    def source_same(name: str) -> bool:
        return a.sources[name] == b.sources[name] and _source_tags(a, name) == _source_tags(b, name)

    def model_same(name: str) -> bool:
        return (
            a.models[name] == b.models[name]
            and old.models[name].sha256 == new.models[name].sha256
            and old.labels[name] == new.labels[name]
        )

    rules: dict[str, tuple[dict[str, Any], dict[str, Any], Callable[[str], bool]]] = {
        "sources": (a.sources, b.sources, source_same),
        "tags": (a.tags, b.tags, lambda n: a.tags[n] == b.tags[n]),
        "assets": (a.assets, b.assets, lambda n: a.assets[n] == b.assets[n]),
        "models": (a.models, b.models, model_same),
        "outputs": (a.outputs, b.outputs, lambda n: a.outputs[n] == b.outputs[n]),
    }
    added, removed, changed = {}, {}, {}
    for section, (x, y, same) in rules.items():
        added[section], removed[section], changed[section] = _compare(x, y, same)
    before = {n: definition_of(x) for n, x in a.actions.items()}
    after = {n: definition_of(x) for n, x in b.actions.items()}
    actions = tuple(
        sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    )
    return MappingDiff(added, removed, changed, tuple(gateway_keys(a.gateway, b.gateway)), actions)


def _source_tags(mapping: Mapping, source: str) -> list[tuple[str, Any]]:
    return [(t.id, t.address) for t in mapping.tags_of_source(source)]


def _ring_shapes(mapping: Mapping) -> dict[str, tuple[int, float]]:
    """Tag id -> (capacity, horizon) of its window ring: the same rule as ``TagTable``."""
    shapes: dict[str, tuple[int, float]] = {}
    for model in mapping.models.values():
        reach = max(model.window_s, model.min_window_s)
        for asset in model.assets:
            for tag in dict.fromkeys(f.tag for f in model.features):
                key = f"{asset}.{tag}"
                cap, hor = shapes.get(key, (0, 0.0))
                shapes[key] = (max(cap, model.max_samples), max(hor, reach))
    return shapes


def retable(table: TagTable, mapping: Mapping, keep_triggers: Collection[str]) -> int:
    """Make ``table`` serve ``mapping`` in place (the same object: the sources, runners and API
    hold it). A tag whose definition is unchanged keeps its state and, when its window has the
    same shape, its window. ``keep_triggers`` names the models whose change trigger (held by
    their running runner) is kept. Returns how many windows were kept."""
    fresh = TagTable(mapping, wall_clock=table.wall_clock, monotonic_clock=table.monotonic_clock)
    old_shapes, new_shapes = _ring_shapes(table.mapping), _ring_shapes(mapping)
    triggers = dict(fresh.triggers)
    swap = {}
    for name in keep_triggers:
        if name in table.triggers and name in fresh.triggers:
            swap[id(fresh.triggers[name])] = table.triggers[name]
            triggers[name] = table.triggers[name]
    kept = 0
    old_entries = table.entries
    for tid, entry in fresh.entries.items():
        if swap and entry.triggers:
            entry.triggers = tuple(swap.get(id(t), t) for t in entry.triggers)
        old = old_entries.get(tid)
        if old is None or old.tag != entry.tag:
            continue
        entry.value, entry.quality, entry.reason = old.value, old.quality, old.reason
        entry.source_time, entry.server_time = old.source_time, old.server_time
        entry.updated, entry.updated_mono = old.updated, old.updated_mono
        if (
            old.ring is not None
            and entry.ring is not None
            and old_shapes.get(tid) == new_shapes.get(tid)
        ):
            entry.ring = old.ring
            kept += 1
    # One synchronous swap: the normalize task and the runners see the old or the new table.
    table.mapping, table.entries, table.triggers = mapping, fresh.entries, triggers
    return kept


def _in_place(old: Prepared, new: Prepared, name: str) -> bool:
    """A changed model that the running runner can take over between two ticks."""
    a, b = old.mapping.models[name], new.mapping.models[name]
    return (
        old.models[name].sha256 == new.models[name].sha256
        and old.labels[name] == new.labels[name]
        and (a.version, a.period_s, a.trigger, a.min_interval_s)
        == (b.version, b.period_s, b.trigger, b.min_interval_s)
    )


@dataclass
class Reloader:
    """Applies a changed mapping to the running gateway's parts, which it changes in place
    (the lists are the gateway's own: its health, shutdown and registry watcher follow)."""

    prepared: Prepared
    tasks: TaskSet
    table: TagTable
    queue: asyncio.Queue[Sequence[TagSample]]
    fanout: PredictionFanout
    supervisors: list[SourceSupervisor]
    runners: list[ModelRunner]
    source_jobs: list[Job]
    model_jobs: list[Job]
    store_sink: StoreSink | None
    view: RuntimeView
    live: LiveModels
    sequences: SequenceRepository
    registry: RegistryRepository
    gateway_id: str
    boot_id: str
    # Set once the gateway started; cleared (under the lock) when it begins to stop.
    running: bool = False
    reloads: int = 0
    refusals: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _watched: tuple[float, int] | None = None
    _refused_revision: str = ""
    # Called with every runner a reload builds (the metrics' prediction counter observes it) and
    # with every mapping applied (the metrics' revision label follows it).
    runner_hooks: list[Callable[[ModelRunner], None]] = field(default_factory=list)
    applied_hooks: list[Callable[[Prepared], None]] = field(default_factory=list)
    # The outputs (HMI server, MES destinations) and the drift/explanation parts a reload
    # changes; ``gateway_hooks`` apply the ``gateway:`` settings that change in place.
    outputs: Outputs | None = None
    insight: Insight | None = None
    gateway_hooks: list[Callable[[GatewaySettings], None]] = field(default_factory=list)
    # Fleet: the assets this gateway serves (None: all); sources read only their tags.
    served: frozenset[str] | None = None
    # Every reload applied or refused is an entry of the audit ledger (None: no ledger).
    audit: AuditLedger | None = None
    _stopped: bool = False

    @property
    def revision(self) -> str:
        return self.prepared.mapping.revision

    def health(self) -> ComponentHealth:
        counters = {"reloads": self.reloads, "refusals": self.refusals}
        return ComponentHealth("mapping", "ok", f"revision {self.revision[:12]}", counters)

    async def start(self) -> None:
        self.running = True

    async def close(self) -> None:
        async with self._lock:  # a reload under way finishes first
            self.running = False
            self._stopped = True

    def prepare_shard(self, served: frozenset[str]) -> None:
        """Before the sources start: build their supervisors over the tags of ``served``
        (the sources stage then starts them)."""
        if self.running or self._stopped:
            return
        self.served = served
        mapping = self.prepared.mapping
        built = self._sources(mapping, list(mapping.sources))
        self.supervisors[:] = [s for s in built.values() if s is not None]
        self.source_jobs[:] = [(f"source:{s.name}", s.run) for s in self.supervisors]

    async def reshard(self, served: frozenset[str]) -> list[str]:
        """The set of assets served changed: every source whose tags change is restarted over
        its new tags (a source no served asset reads is stopped). Returns the sources restarted."""
        async with self._lock:
            if self._stopped:
                return []
            if not self.running:
                self.prepare_shard(served)
                return []
            self.served = served
            mapping = self.prepared.mapping
            current = {s.name: set(s.tag_ids) for s in self.supervisors}
            changed = [
                name
                for name in mapping.sources
                if {t.id for t in source_tags(mapping, name, served)} != current.get(name, set())
            ]
            if not changed:
                return []
            built = await asyncio.to_thread(self._sources, mapping, changed)
            await self.tasks.cancel_named(*(f"source:{n}" for n in changed))
            self.supervisors[:] = [s for s in self.supervisors if s.name not in changed]
            self.source_jobs[:] = [j for j in self.source_jobs if j[0][7:] not in changed]
            for name, supervisor in built.items():
                if supervisor is None:
                    continue
                self.supervisors.append(supervisor)
                job: Job = (f"source:{name}", supervisor.run)
                self.source_jobs.append(job)
                self.tasks.spawn(job[0], job[1]())
            log.info("sources_resharded", sources=changed, assets=len(served))
            return changed

    async def reload(self, actor: str = "system") -> ReloadSummary:
        """``actor``: who asked (``key:<id>`` through the API; ``system`` for SIGHUP and the
        file watch), for the audit ledger."""
        async with self._lock:
            if not self.running:
                raise ReloadUnavailable("the gateway is starting or stopping; try again")
            path = self.prepared.mapping.path
            try:
                new = await asyncio.to_thread(prepare, path, None, self.prepared)
            except ConfigError as err:
                self.refusals += 1
                log.warning(
                    "mapping_reload_refused",
                    mapping=str(path),
                    problems=[str(i) for i in err.issues],
                    running_revision=self.revision[:12],
                )
                await self._audit(
                    actor,
                    "mapping.refused",
                    {"revision": self.revision},
                    None,
                    "; ".join(str(i) for i in err.issues)[:2000],
                )
                raise
            old = self.prepared
            diff = diff_mappings(old, new)
            outputs = await self._apply(old, new, diff)
            self.prepared = new
            for applied in self.applied_hooks:
                applied(new)
            if any(gateway_in_place(k) for k in diff.gateway):
                for apply_gateway in self.gateway_hooks:
                    apply_gateway(new.mapping.gateway)
            self.reloads += 1
            changes = diff.changes()
            if outputs.failed:
                changes["outputs.failed"] = list(outputs.failed)
            summary = ReloadSummary(
                new.mapping.revision,
                old.mapping.revision,
                changes,
                diff.restart_needed() + [f"outputs.{n}" for n in outputs.failed],
                dict(outputs.kept_outbox),
            )
            log.info(
                "mapping_reloaded",
                mapping=str(path),
                revision=summary.revision[:12],
                previous=summary.previous_revision[:12],
                changes=summary.changes,
                restart_needed=summary.restart_needed,
                outbox_kept=summary.outbox_kept,
            )
            await self._audit(
                actor,
                "mapping.reloaded",
                {"revision": summary.previous_revision},
                {
                    "revision": summary.revision,
                    "changes": {k: list(v) for k, v in changes.items()},
                    # gateway.* settings that apply at the next start: changed all the same.
                    "restart_needed": list(summary.restart_needed),
                },
                "",
            )
            return summary

    async def _audit(self, actor: str, action: str, before: Any, after: Any, reason: str) -> None:
        if self.audit is None:
            return
        channel = "rest" if actor.startswith("key:") else "system"
        subject = f"mapping:{self.prepared.mapping.path.name}"
        entry = NewAuditEntry(actor, channel, action, subject, before, after, reason)
        await self.audit.record(entry)

    async def reload_logged(self) -> None:
        """Reload for SIGHUP and the file watch: problems are logged, never raised."""
        try:
            await self.reload()
        except ConfigError:
            pass  # logged by reload
        except ReloadUnavailable as exc:
            log.warning("mapping_reload_skipped", reason=str(exc))
        except Exception:  # a reload's bug must not end the gateway
            log.exception("mapping_reload_failed")

    async def watch(self, interval_s: float) -> None:
        """Reload when the mapping file's content changes (mtime and size first, then its
        sha256); a content refused once is not tried again until it changes."""
        path = self.prepared.mapping.path
        while True:
            await asyncio.sleep(interval_s)
            interval_s = self.prepared.mapping.gateway.reload.watch_interval_s
            try:
                st = path.stat()
            except OSError:
                continue  # an editor replacing the file: look again next time
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._watched:
                continue
            self._watched = stamp
            digest = await asyncio.to_thread(_sha256, path)
            if digest in (self.revision, self._refused_revision):
                continue
            try:
                await self.reload()
            except ConfigError:
                self._refused_revision = digest
            except ReloadUnavailable:
                self._watched = None  # try again next time
            except Exception:  # a reload's bug must not end the gateway
                log.exception("mapping_reload_failed")

    async def _apply(self, old: Prepared, new: Prepared, diff: MappingDiff) -> OutputsChange:
        mapping = new.mapping
        # 1. Build what is new before anything stops: a connector that refuses its settings
        #    leaves the running mapping untouched.
        #    Off the loop: a connector imports its protocol library when it first makes a
        #    source (pymodbus: ~0.8 s that would stall every tick).
        built = await asyncio.to_thread(
            self._sources, mapping, diff.added["sources"] + diff.changed["sources"]
        )
        in_place = [n for n in diff.changed["models"] if _in_place(old, new, n)]
        rebuild = [n for n in diff.changed["models"] if n not in in_place]
        kept_models = [n for n in mapping.models if n not in diff.added["models"] + tuple(rebuild)]
        # Outputs: the changed ones restart, the others follow the new (asset, model) pairs
        # before any model serves them (an added asset's HMI nodes exist before its first
        # prediction; a removed asset's last predictions are counted, not shown).
        outputs = OutputsChange()
        if self.outputs is not None:
            outputs = await self.outputs.apply(new, diff.changed["outputs"])
            self.live.follow_sinks()
            if outputs.started or outputs.restarted:
                self.live.wake()  # a new HMI server shows the serving versions at once

        # 2. Stop what goes away or is rebuilt (their tasks end before the table changes).
        gone_sources = diff.removed["sources"] + diff.changed["sources"]
        await self.tasks.cancel_named(*(f"source:{n}" for n in gone_sources))
        gone_models = diff.removed["models"] + tuple(rebuild)
        await self.tasks.cancel_named(*(f"model:{n}" for n in gone_models))
        old_runners = {r.model.name: r for r in self.runners}

        # 3. Swap the table and update the runners that stay, with no await in between.
        windows = retable(self.table, mapping, kept_models)
        for name in in_place:
            old_runners[name].model = mapping.models[name]
        if self.insight is not None:  # their drift and explanations follow the new model
            self.insight.rewire(mapping, in_place, [old_runners[n] for n in in_place])
        self.supervisors[:] = [s for s in self.supervisors if s.name not in gone_sources]
        self.runners[:] = [r for r in self.runners if r.model.name not in gone_models]
        self.source_jobs[:] = [j for j in self.source_jobs if j[0][7:] not in gone_sources]
        self.model_jobs[:] = [j for j in self.model_jobs if j[0][6:] not in gone_models]
        if self.store_sink is not None:
            self.store_sink.set_mapping_revision(mapping.revision)

        # 4. Start what is new.
        fresh: list[ModelRunner] = []
        for name in diff.added["models"] + tuple(rebuild):
            runner = model_runner(
                new, name, self.table, self.fanout.publish, self.gateway_id, self.boot_id
            )
            runner.record_comparisons = self._record
            for hook in self.runner_hooks:
                hook(runner)
            previous = old_runners.get(name)
            if previous is not None:
                runner.resume(previous.sequences)
                # Whoever watches the model's ticks (a test, the demo) goes on watching.
                runner.observers.extend(o for o in previous.observers if o not in runner.observers)
            else:
                runner.resume(await asyncio.to_thread(self.sequences.last, self.gateway_id, name))
            fresh.append(runner)
        # Drift and explanations of the models added or rebuilt, built as at start, before
        # their first tick.
        if self.insight is not None:
            self.insight.rewire(mapping, diff.removed["models"] + tuple(rebuild), fresh)
        for runner in fresh:
            self.runners.append(runner)
            job: Job = (f"model:{runner.model.name}", runner.run)
            self.model_jobs.append(job)
            self.tasks.spawn(job[0], job[1]())
        if self.insight is not None:
            await self.insight.settle()
        for name, supervisor in built.items():
            if supervisor is None:
                continue
            self.supervisors.append(supervisor)
            job = (f"source:{name}", supervisor.run)
            self.source_jobs.append(job)
            self.tasks.spawn(job[0], job[1]())
        self._update_view(new, diff)
        if diff.added["models"] or rebuild:
            await self._register_models()
        log.info(
            "mapping_reload_applied",
            sources_restarted=list(diff.changed["sources"]),
            models_in_place=in_place,
            models_rebuilt=rebuild,
            windows_kept=windows,
            outputs_started=list(outputs.started),
            outputs_stopped=list(outputs.stopped),
            outputs_restarted=list(outputs.restarted),
        )
        return outputs

    def _sources(
        self, mapping: Mapping, names: Sequence[str]
    ) -> dict[str, SourceSupervisor | None]:
        """New supervisors (connectors' constructors do no I/O and need no running loop)."""
        return {
            name: source_supervisor(mapping, name, self.queue, self.table, self.served)
            for name in names
        }

    async def _record(self, rows: Sequence[CandidateComparison]) -> None:
        await asyncio.to_thread(self.registry.add_comparisons, [stored_comparison(c) for c in rows])

    async def _register_models(self) -> None:
        """New mapping models become registry versions (as at start); the watcher then
        applies what the registry says serves."""
        try:
            await self.live.watcher.seed()
        except BridgeError as exc:
            log.warning("mapping_reload_models_not_registered", error=str(exc))
        self.live.wake()

    def _update_view(self, new: Prepared, diff: MappingDiff) -> None:
        now = time.time()
        fresh = set(diff.added["models"] + diff.changed["models"])
        infos = {i.name: i for i in self.view.model_infos if i.name not in fresh}
        for name, m in new.mapping.models.items():
            if name not in infos:
                infos[name] = ModelInfo(
                    name,
                    m.version,
                    new.models[name].sha256,
                    str(m.path),
                    now,
                    m.assets,
                    tuple(f.name for f in m.features),
                )
        self.view.model_infos = [infos[n] for n in new.mapping.models]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
