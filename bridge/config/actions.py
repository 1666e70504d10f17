"""Write-back actions (``actions:`` of the mapping): where a value is written, when, which
value, within which limits, under which interlocks, and whether a person confirms it.

The target is declared in protocol-neutral shapes owned by the core (a Modbus register or coil,
an OPC UA node written ``nsu=``), so validating a mapping imports no connector. Conditions
(``running == true``, ``speed < 1500``) and value expressions (``tags.speed - 50``) are data
checked once here, not code: a condition is one comparison of a tag with a literal; an
expression is arithmetic over a fixed list of fields (``FIELDS``) and the action asset's tags.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.config.strict import Strict

if TYPE_CHECKING:
    from bridge.config.resolved import Endpoint, ResolvedModel, ResolvedTag
    from bridge.config.spec import MappingFile

__all__ = [
    "FIELDS",
    "INT_RANGES",
    "ActionConfig",
    "ActionLimits",
    "ActionTarget",
    "ActionTrigger",
    "ActionValue",
    "Condition",
    "Expression",
    "ExpressionError",
    "ModbusTarget",
    "OpcUaTarget",
    "ResolvedAction",
    "ValueType",
    "check_value",
    "parse_condition",
    "parse_expression",
    "resolve_actions",
]

ValueType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Mode = Literal["auto", "confirm", "shadow"]

# What each integer type can hold: limits outside these could never be written.
INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
# Finite float32 values: a limit beyond cannot be encoded.
FLOAT32_MAX = 3.4028234663852886e38

# The fields an expression may name besides ``tags.<name>``, and what each holds.
FIELDS: dict[str, str] = {
    "value": "the prediction's number (regressors); null for a classifier or a tag trigger",
    "score": "the prediction's score (the chosen class's probability), or null",
    "drift_score": "the asset's drift score at the prediction, or null",
    "last": "the value this action wrote last, or null before its first write",
}

_NSU = re.compile(r"^nsu=[^;]+;[isgb]=.+$", re.DOTALL)
_TAG_REF = re.compile(r"^(?:(?P<asset>[A-Za-z][A-Za-z0-9_-]*)\.)?(?P<tag>[a-z][a-z0-9_]*)$")
_CONDITION = re.compile(r"^\s*(?P<tag>\S+?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<literal>.+?)\s*$")

Literal_ = bool | float | str
Loc = tuple[str | int, ...]
AddIssue = Callable[[Loc, str, str], None]  # (key path, message, fix)


def _problem(kind: str, message: str, hint: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, {**ctx, "hint": hint})


# --- conditions ------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """``<tag> <op> <literal>``: ``tag`` as written (``speed`` on the action's asset, or
    ``asset.tag``); ``literal`` a number, true/false or a quoted text."""

    text: str
    tag: str
    op: str
    literal: Literal_

    def holds(self, value: object) -> bool:
        """False for a value of another kind than the literal (a text compared with a
        number, a number with true/false): an interlock that cannot be judged is not met."""
        lit = self.literal
        if isinstance(lit, bool):
            if not isinstance(value, bool) or self.op not in ("==", "!="):
                return False
        elif isinstance(lit, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if math.isnan(value):
                return False
        elif not isinstance(value, str):
            return False
        return bool(_COMPARE[self.op](value, lit))


def parse_condition(text: str) -> Condition:
    """Parse ``speed < 1500``; raise ``ValueError`` naming what is wrong."""
    m = _CONDITION.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a condition of the form `<tag> <op> <value>` "
            "(op one of ==, !=, <, <=, >, >=), e.g. `speed < 1500` or `running == true`"
        )
    tag, op, raw = m["tag"], m["op"], m["literal"]
    if _TAG_REF.match(tag) is None:
        raise ValueError(f"{tag!r} in {text!r} is not a tag name (`tag` or `asset.tag`)")
    literal: Literal_
    if raw in ("true", "false"):
        literal = raw == "true"
        if op not in ("==", "!="):
            raise ValueError(f"{text!r}: true/false compare with == or != only")
    elif len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        literal = raw[1:-1]
        if op not in ("==", "!="):
            raise ValueError(f"{text!r}: a text compares with == or != only")
    else:
        try:
            literal = float(raw)
        except ValueError:
            raise ValueError(
                f"{raw!r} in {text!r} is not a number, true/false or a quoted text"
            ) from None
        if not math.isfinite(literal):
            raise ValueError(f"{text!r}: the value must be a finite number")
    return Condition(text.strip(), tag, op, literal)


# --- expressions -----------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
_MAX_EXPRESSION = 500


class ExpressionError(ValueError):
    """An expression cannot be computed for this event (a null field, a division by zero)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked arithmetic expression; ``evaluate`` computes it from the event's fields.

    Only numbers, ``+ - * /``, unary minus, parentheses, ``min``/``max``/``abs`` and the names
    in ``FIELDS`` or ``tags.<name>`` exist: nothing is looked up or called beyond them."""

    text: str
    tree: ast.expr
    fields: frozenset[str]  # FIELDS names used
    tags: frozenset[str]  # tag names used (``tags.<name>``)

    def evaluate(self, fields: Mapping[str, object], tags: Mapping[str, object]) -> float:
        return _eval(self.tree, fields, tags)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{what} is {value!r}, not a number")
    return float(value)


def _eval(node: ast.expr, fields: Mapping[str, object], tags: Mapping[str, object]) -> float:
    if isinstance(node, ast.Constant):
        return _number(node.value, repr(node.value))
    if isinstance(node, ast.Name):
        return _number(fields.get(node.id), node.id)
    if isinstance(node, ast.Attribute):
        return _number(tags.get(node.attr), f"tags.{node.attr}")
    if isinstance(node, ast.UnaryOp):
        inner = _eval(node.operand, fields, tags)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, fields, tags), _eval(node.right, fields, tags)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ExpressionError("division by zero")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return float(_FUNCTIONS[node.func.id](*(_eval(a, fields, tags) for a in node.args)))
    raise ExpressionError(f"cannot compute {ast.dump(node)}")  # parse_expression refused it


def _check(node: ast.AST, text: str, used: set[str], tags: set[str]) -> None:
    allowed = ", ".join(FIELDS)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"{node.value!r} in {text!r}: only numbers are allowed")
    elif isinstance(node, ast.Name):
        if node.id not in FIELDS:
            raise ValueError(
                f"unknown field {node.id!r} in {text!r}: use one of {allowed} or tags.<name>"
            )
        used.add(node.id)
    elif isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id == "tags"):
            raise ValueError(f"{ast.unparse(node)!r} in {text!r}: only tags.<name> has a dot")
        tags.add(node.attr)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand, text, used, tags)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, text, used, tags)
        _check(node.right, text, used, tags)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ValueError(f"{ast.unparse(node.func)!r} in {text!r}: only min, max, abs")
        if node.keywords or not node.args or (node.func.id == "abs" and len(node.args) != 1):
            raise ValueError(f"{ast.unparse(node)!r} in {text!r}: wrong arguments")
        for arg in node.args:
            _check(arg, text, used, tags)
    else:
        raise ValueError(
            f"{ast.unparse(node)!r} in {text!r} is not allowed: use numbers, + - * /, "
            f"parentheses, min/max/abs, {allowed} and tags.<name>"
        )


def parse_expression(text: str) -> Expression:
    """Check ``text`` against the whitelist; raise ``ValueError`` naming what is not allowed."""
    if len(text) > _MAX_EXPRESSION:
        raise ValueError(f"the expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"{text!r} is not an expression: {exc.msg}") from None
    used: set[str] = set()
    tags: set[str] = set()
    _check(tree, text, used, tags)
    return Expression(text, tree, frozenset(used), frozenset(tags))


# --- the mapping's models --------------------------------------------------------------------


class ModbusTarget(Strict):
    source: str = Field(description="A `kind: modbus` source (the connection to write through).")
    table: Literal["holding", "coil"] = Field(
        description="holding: a holding register (FC6/FC16); coil: a coil (FC5). Input "
        "registers and discrete inputs cannot be written."
    )
    address: int = Field(ge=0, le=65535, description="0-based protocol address.")
    type: ValueType | None = Field(
        None,
        description="Data type in the registers (default uint16; a coil is always bool). "
        "Integer types round the value to the nearest integer (see docs/actions.md).",
    )
    word_order: WordOrder = Field(
        "ABCD",
        description="Byte order of 32/64-bit values as sent (A = most significant byte), as "
        "for a Modbus tag's address.",
    )
    unit: int | None = Field(
        None, ge=0, le=247, description="Unit id (default: the source's `unit`)."
    )

    @model_validator(mode="after")
    def _bit_or_register(self) -> ModbusTarget:
        if self.table == "coil" and self.type not in (None, "bool"):
            raise _problem(
                "coil_type",
                "a coil is a single bit: its type is bool, not {type}",
                "remove `type:` or write a holding register",
                type=self.type,
            )
        if self.table == "holding" and self.type == "bool":
            raise _problem(
                "register_bool",
                "a holding register holds a number, not a bool",
                "write a coil (`table: coil`) or give a numeric type",
            )
        return self

    @property
    def value_type(self) -> ValueType:
        if self.table == "coil":
            return "bool"
        return self.type or "uint16"

    @property
    def register_count(self) -> int:
        if self.table == "coil":
            return 1
        return {"int64": 4, "uint64": 4, "float64": 4}.get(
            self.value_type, 2 if "32" in self.value_type else 1
        )


class OpcUaTarget(Strict):
    source: str = Field(description="A `kind: opcua` source (the session to write through).")
    node: str = Field(
        description="Node id of the variable, nsu=<namespace uri>;<i=|s=|g=|b=><identifier>."
    )
    type: ValueType = Field(
        description="Type of the value written (the variable's DataType: bool is Boolean, "
        "float32 Float, float64 Double, int16 Int16 ...)."
    )

    @model_validator(mode="after")
    def _nsu(self) -> OpcUaTarget:
        if _NSU.match(self.node) is None:
            raise _problem(
                "node_id",
                "{node!r} is not a node id of the form nsu=<namespace uri>;s=<identifier>",
                "write the namespace URI, never a namespace index (they change across "
                "server restarts)",
                node=self.node,
            )
        return self

    @property
    def value_type(self) -> ValueType:
        return self.type


class ActionTarget(Strict):
    modbus: ModbusTarget | None = Field(None, description="A holding register or a coil.")
    opcua: OpcUaTarget | None = Field(None, description="An OPC UA variable.")

    @model_validator(mode="after")
    def _one(self) -> ActionTarget:
        if (self.modbus is None) == (self.opcua is None):
            raise _problem(
                "target_one",
                "name exactly one target: `modbus:` or `opcua:`",
                "write `target: {modbus: {source, table, address, type}}` or "
                "`target: {opcua: {source, node, type}}`",
            )
        return self

    @property
    def chosen(self) -> ModbusTarget | OpcUaTarget:
        chosen = self.modbus or self.opcua
        assert chosen is not None
        return chosen


class ActionTrigger(Strict):
    model: str | None = Field(
        None, description="Run on each prediction of this model for the action's asset."
    )
    label: str | None = Field(
        None, description="With `model`: only when the predicted label is this one."
    )
    min_score: float | None = Field(
        None, ge=0, le=1, description="With `model`: only when the score is at least this."
    )
    tag: str | None = Field(
        None,
        description="Instead of `model`: run when a tag changes and this condition holds, "
        "e.g. `bearing_temperature > 80` (a tag of the action's asset, or `asset.tag`).",
    )

    @model_validator(mode="after")
    def _one(self) -> ActionTrigger:
        if (self.model is None) == (self.tag is None):
            raise _problem(
                "trigger_one",
                "name exactly one trigger: `model:` (a prediction) or `tag:` (a condition)",
                "write `trigger: {model: pump-health, label: bearing_fault}` or "
                "`trigger: {tag: 'bearing_temperature > 80'}`",
            )
        if self.tag is not None and (self.label is not None or self.min_score is not None):
            raise _problem(
                "trigger_tag_label",
                "`label` and `min_score` judge a prediction; a tag trigger has none",
                "remove them, or trigger on `model:`",
            )
        if self.tag is not None:
            _checked_condition(self.tag)
        return self


class ActionValue(Strict):
    constant: float | bool | None = Field(None, description="Always write this value.")
    expression: str | None = Field(
        None,
        description="Compute the value: numbers, + - * /, parentheses, min/max/abs over "
        "the fields value, score, drift_score, last and tags.<name> (the action asset's "
        "tags), e.g. `tags.speed - 50`.",
    )
    output: Literal["value", "score"] | None = Field(
        None, description="Write the model's output: its number (`value`) or its `score`."
    )

    @model_validator(mode="after")
    def _one(self) -> ActionValue:
        given = [f for f in ("constant", "expression", "output") if getattr(self, f) is not None]
        if len(given) != 1:
            raise _problem(
                "value_one",
                "name exactly one of `constant`, `expression` or `output`",
                "e.g. `value: {constant: 1200}` or `value: {expression: 'tags.speed - 50'}`",
            )
        if self.expression is not None:
            try:
                parse_expression(self.expression)
            except ValueError as exc:
                raise _problem(
                    "expression",
                    "{reason}",
                    "see docs/actions.md for what an expression may use",
                    reason=str(exc),
                ) from None
        return self


class ActionLimits(Strict):
    min: float | None = Field(None, description="Lowest value ever written (numbers: required).")
    max: float | None = Field(None, description="Highest value ever written (numbers: required).")
    clamp: bool = Field(
        False,
        description="Bring a value outside [min, max], or a step beyond the rate limit, to "
        "the nearest allowed value instead of refusing it (refusing is the default).",
    )
    max_rate_per_min: float | None = Field(
        None,
        gt=0,
        description="Largest change per minute relative to the last written value and its "
        "time, e.g. 60 allows +-30 thirty seconds after the last write.",
    )
    max_writes_per_hour: int | None = Field(
        None, ge=1, description="At most this many writes in any 60 minutes (sliding)."
    )
    deadband: float = Field(
        0.0, ge=0, description="No write when |new - last written| is below this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ActionLimits:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise _problem("limit_finite", "{name} must be a finite number", "", name=name)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _problem(
                "limits_order",
                "min ({min}) is above max ({max})",
                "swap them: min is the lowest value ever written",
                min=self.min,
                max=self.max,
            )
        return self


def _checked_condition(text: str) -> str:
    try:
        parse_condition(text)
    except ValueError as exc:
        raise _problem(
            "condition", "{reason}", "see docs/actions.md (Conditions)", reason=str(exc)
        ) from None
    return text


class ActionConfig(Strict):
    asset: str = Field(description="The asset the action acts on; bare tag names are its tags.")
    description: str = Field("", description="Free text for people (shown when confirming).")
    target: ActionTarget = Field(description="Where the value is written.")
    trigger: ActionTrigger = Field(description="When the action is evaluated.")
    value: ActionValue = Field(description="What is written.")
    limits: ActionLimits = Field(
        default_factory=ActionLimits, description="Range, rate, writes per hour, deadband."
    )
    interlocks: list[Annotated[str, AfterValidator(_checked_condition)]] = Field(
        default_factory=list,
        description="Conditions that must all hold, each on a Good and fresh tag, e.g. "
        "`running == true`, `speed < 1500`; any Bad, stale or false one refuses the write.",
    )
    mode: Mode = Field(
        "shadow",
        description="`auto`: write; `confirm`: an operator confirms each write within "
        "`confirm_timeout_s`; `shadow`: record what would be written, write nothing.",
    )
    confirm_timeout_s: float | None = Field(
        None,
        validate_default=True,
        gt=0,
        le=3600,
        description="With `mode: confirm`: a write not confirmed this long is dropped.",
    )
    read_back_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How long the device has to answer the write, and then the read-back. "
        "Past it the action goes to `fault` (a write without an answer may have taken effect).",
    )

    @field_validator("confirm_timeout_s")
    @classmethod
    def _timeout_with_confirm(cls, value: float | None, info: ValidationInfo) -> float | None:
        mode = info.data.get("mode")
        if mode == "confirm" and value is None:
            raise _problem(
                "confirm_timeout",
                "`mode: confirm` needs `confirm_timeout_s`",
                "add `confirm_timeout_s: 60` (how long an operator has to confirm)",
            )
        if mode in ("auto", "shadow") and value is not None:
            raise _problem(
                "confirm_timeout_unused",
                "`confirm_timeout_s` applies to `mode: confirm` only",
                "remove it, or write `mode: confirm`",
            )
        return value


def check_value(action: ActionConfig, loc: Loc, add: AddIssue) -> None:
    """The value and limits against the target's type (needs the whole action, so reported
    here with the key each problem is at, rather than by a model validator)."""
    kind = action.target.chosen.value_type
    limits, value = action.limits, action.value
    if kind == "bool":
        if value.constant is None or not isinstance(value.constant, bool):
            add(
                (*loc, "value"),
                "a bool target (a coil) takes `constant: true` or `false` only",
                "write `value: {constant: true}`",
            )
        for name in ("min", "max", "max_rate_per_min"):
            if getattr(limits, name) is not None:
                add(
                    (*loc, "limits", name),
                    f"{name} bounds a number; a bool target has none",
                    "remove it (max_writes_per_hour still applies)",
                )
        return
    if isinstance(value.constant, bool):
        add(
            (*loc, "value", "constant"),
            f"a {kind} target takes a number, not {str(value.constant).lower()}",
            "write a number, or write a coil for true/false",
        )
        return
    if limits.min is None or limits.max is None:
        add(
            (*loc, "limits"),
            "a numeric target needs `limits: {min, max}`: nothing is written unbounded",
            "add `limits: {min: ..., max: ...}` (the lowest and highest value ever written)",
        )
        return
    low, high = _type_range(kind)
    if limits.min < low or limits.max > high:
        add(
            (*loc, "limits"),
            f"limits [{limits.min:g}, {limits.max:g}] exceed what a {kind} holds "
            f"[{low:g}, {high:g}]",
            "narrow min/max to the type's range",
        )
    if value.constant is not None and not limits.min <= value.constant <= limits.max:
        add(
            (*loc, "value", "constant"),
            f"constant {value.constant:g} is outside the limits [{limits.min:g}, {limits.max:g}]",
            "write a constant within min..max, or change the limits",
        )


def _type_range(kind: str) -> tuple[float, float]:
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return float(low), float(high)
    if kind == "float32":
        return -FLOAT32_MAX, FLOAT32_MAX
    return -math.inf, math.inf


# --- after resolution ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedAction:
    """An action with every reference checked: tag ids are ``asset.tag``."""

    name: str
    asset: str
    target: ModbusTarget | OpcUaTarget
    value_type: ValueType
    mode: Mode
    limits: ActionLimits
    # Trigger: a prediction of ``model`` (with ``label`` / ``min_score``) or a tag condition.
    model: str | None
    label: str | None
    min_score: float | None
    trigger_tag: Condition | None  # its ``tag`` is a tag id
    constant: float | bool | None
    expression: Expression | None
    output: Literal["value", "score"] | None
    interlocks: tuple[Condition, ...]  # ``tag`` of each is a tag id
    confirm_timeout_s: float | None
    # Tag id -> the age beyond which it counts as stale (the tag's max_age_s).
    max_age_s: Mapping[str, float] = field(default_factory=dict)
    # Tag name in expressions -> tag id.
    expression_tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    read_back_timeout_s: float = 5.0


# --- resolution: references between sections ------------------------------------------------

_KINDS = {"modbus": "modbus", "opcua": "opcua"}  # target shape -> the source kind it needs


def resolve_actions(
    spec: MappingFile,
    sources: Mapping[str, Endpoint],
    kinds: Mapping[str, str],
    tags: Mapping[str, ResolvedTag],
    models: Mapping[str, ResolvedModel],
    add: AddIssue,
) -> dict[str, ResolvedAction]:
    """Check what each action names (asset, tags, model, label, source, target) and resolve
    it; every problem goes to ``add``. An action with a problem is left out."""
    out: dict[str, ResolvedAction] = {}
    for name, action in spec.actions.items():
        before = _Counter(add)
        resolved = _resolve(name, action, spec, sources, kinds, tags, models, before)
        if resolved is not None and not before.count:
            out[name] = resolved
    _one_asset_per_target(out, sources, add)
    return out


def _one_asset_per_target(
    actions: Mapping[str, ResolvedAction], sources: Mapping[str, Endpoint], add: AddIssue
) -> None:
    """Actions that write one place must act for one asset: in a fleet the asset's lease
    holder is the only gateway that acts for it, so that place has one writer."""
    seen: list[ResolvedAction] = []
    for action in actions.values():
        endpoint = sources.get(action.target.source)
        unit = getattr(endpoint.settings, "unit", None) if endpoint is not None else None
        for other in seen:
            if other.asset != action.asset and _targets_overlap(other.target, action.target, unit):
                shape = "modbus" if isinstance(action.target, ModbusTarget) else "opcua"
                add(
                    ("actions", action.name, "target", shape),
                    f"action {action.name!r} (asset {action.asset!r}) writes where action "
                    f"{other.name!r} (asset {other.asset!r}) writes",
                    "give both actions the same asset (one gateway of a fleet acts for an "
                    "asset, so a place has one writer), or write different places",
                )
                break
        seen.append(action)


def _targets_overlap(
    a: ModbusTarget | OpcUaTarget, b: ModbusTarget | OpcUaTarget, default_unit: int | None
) -> bool:
    if a.source != b.source:
        return False
    if isinstance(a, OpcUaTarget) or isinstance(b, OpcUaTarget):
        return isinstance(a, OpcUaTarget) and isinstance(b, OpcUaTarget) and a.node == b.node
    unit_a = a.unit if a.unit is not None else default_unit
    unit_b = b.unit if b.unit is not None else default_unit
    if a.table != b.table or unit_a != unit_b:
        return False
    return a.address < b.address + b.register_count and b.address < a.address + a.register_count


class _Counter:
    def __init__(self, add: AddIssue) -> None:
        self.add, self.count = add, 0

    def __call__(self, loc: Loc, message: str, hint: str) -> None:
        self.count += 1
        self.add(loc, message, hint)


def _resolve(
    name: str,
    action: ActionConfig,
    spec: MappingFile,
    sources: Mapping[str, Endpoint],
    kinds: Mapping[str, str],
    tags: Mapping[str, ResolvedTag],
    models: Mapping[str, ResolvedModel],
    add: _Counter,
) -> ResolvedAction | None:
    loc: Loc = ("actions", name)
    if action.asset not in spec.assets:
        add((*loc, "asset"), f"unknown asset {action.asset!r}", _near(action.asset, spec.assets))
        return None
    known = sorted(t.name for t in tags.values() if t.asset == action.asset)

    def tag_id(ref: str, where: Loc) -> str | None:
        tid = ref if "." in ref else f"{action.asset}.{ref}"
        if tid not in tags:
            add(
                where,
                f"unknown tag {ref!r} (no tag {tid!r} in the mapping)",
                f"use a tag of asset {action.asset!r} ({', '.join(known[:8]) or 'none'}) "
                "or write `asset.tag`",
            )
            return None
        return tid

    max_age: dict[str, float] = {}
    interlocks: list[Condition] = []
    for i, text in enumerate(action.interlocks):
        cond = parse_condition(text)
        tid = tag_id(cond.tag, (*loc, "interlocks", i))
        if tid is not None:
            interlocks.append(Condition(cond.text, tid, cond.op, cond.literal))
            max_age[tid] = tags[tid].max_age_s
    trigger_tag = None
    trigger = action.trigger
    if trigger.tag is not None:
        cond = parse_condition(trigger.tag)
        tid = tag_id(cond.tag, (*loc, "trigger", "tag"))
        if tid is not None:
            trigger_tag = Condition(cond.text, tid, cond.op, cond.literal)
            max_age[tid] = tags[tid].max_age_s
    else:
        _check_model(loc, action, models, add)
    expression = None
    expression_tags: dict[str, str] = {}
    if action.value.expression is not None:
        expression = parse_expression(action.value.expression)
        for tag in sorted(expression.tags):
            tid = tag_id(tag, (*loc, "value", "expression"))
            if tid is not None:
                expression_tags[tag] = tid
                max_age[tid] = tags[tid].max_age_s
        if trigger.tag is not None and expression.fields & {"value", "score", "drift_score"}:
            add(
                (*loc, "value", "expression"),
                "value, score and drift_score come from a prediction; this action is "
                "triggered by a tag",
                "trigger on `model:`, or compute from tags.<name> and last",
            )
    if action.value.output is not None and trigger.tag is not None:
        add(
            (*loc, "value", "output"),
            "`output` writes a model's output; this action is triggered by a tag",
            "trigger on `model:`, or write a `constant` or an `expression`",
        )
    check_value(action, loc, add)
    target = action.target.chosen
    _check_target(loc, action, target, spec, sources, kinds, tags, add)
    return ResolvedAction(
        name=name,
        asset=action.asset,
        target=target,
        value_type=target.value_type,
        mode=action.mode,
        limits=action.limits,
        model=trigger.model,
        label=trigger.label,
        min_score=trigger.min_score,
        trigger_tag=trigger_tag,
        constant=action.value.constant,
        expression=expression,
        output=action.value.output,
        interlocks=tuple(interlocks),
        confirm_timeout_s=action.confirm_timeout_s,
        max_age_s=max_age,
        expression_tags=expression_tags,
        description=action.description,
        read_back_timeout_s=action.read_back_timeout_s,
    )


def _check_model(
    loc: Loc, action: ActionConfig, models: Mapping[str, ResolvedModel], add: _Counter
) -> None:
    trigger = action.trigger
    assert trigger.model is not None
    model = models.get(trigger.model)
    if model is None:
        add(
            (*loc, "trigger", "model"),
            f"unknown model {trigger.model!r}",
            _near(trigger.model, models),
        )
        return
    if action.asset not in model.assets:
        add(
            (*loc, "trigger", "model"),
            f"model {trigger.model!r} does not serve asset {action.asset!r}",
            f"trigger on a model that serves it, or add the asset to models.{trigger.model}",
        )
    regressor = model.outputs.value is not None
    if trigger.label is not None:
        if regressor:
            add(
                (*loc, "trigger", "label"),
                f"model {trigger.model!r} is a regressor: its predictions have no label",
                "remove `label:`",
            )
        elif model.labels is not None and trigger.label not in model.labels:
            add(
                (*loc, "trigger", "label"),
                f"model {trigger.model!r} has no label {trigger.label!r}",
                f"use one of: {', '.join(model.labels)}",
            )
    if action.value.output == "value" and not regressor:
        add(
            (*loc, "value", "output"),
            f"model {trigger.model!r} is a classifier: its output is a label, not a number",
            "write `output: score`, a `constant` or an `expression`",
        )


def _check_target(
    loc: Loc,
    action: ActionConfig,
    target: ModbusTarget | OpcUaTarget,
    spec: MappingFile,
    sources: Mapping[str, Endpoint],
    kinds: Mapping[str, str],
    tags: Mapping[str, ResolvedTag],
    add: _Counter,
) -> None:
    shape = "modbus" if isinstance(target, ModbusTarget) else "opcua"
    where: Loc = (*loc, "target", shape)
    kind = kinds.get(target.source)
    if kind is None:
        add((*where, "source"), f"unknown source {target.source!r}", _near(target.source, kinds))
        return
    if kind != _KINDS[shape]:
        add(
            (*where, "source"),
            f"source {target.source!r} is of kind {kind}, not {_KINDS[shape]}",
            f"name a `kind: {_KINDS[shape]}` source, or write the `{kind}:` target shape",
        )
        return
    endpoint = sources.get(target.source)
    default_unit = getattr(endpoint.settings, "unit", None) if endpoint is not None else None
    transport = getattr(endpoint.settings, "transport", "tcp") if endpoint is not None else "tcp"
    if shape == "modbus" and transport != "tcp":
        # RTU frames carry no transaction id: a second client on the line would take the
        # source's replies for its own.
        add(
            (*where, "source"),
            f"source {target.source!r} is Modbus {transport}: actions write through Modbus "
            "TCP sources only",
            "write through a Modbus TCP source to the device (a TCP gateway in front of the "
            "RTU line), or leave this action out",
        )
        return
    for tag in tags.values():
        if tag.source != target.source or not _same_place(target, tag.address, default_unit):
            continue
        if not _writable(spec, tag.asset, tag.name):
            add(
                where,
                f"the target is also source tag {tag.id!r}, which is not declared writable",
                f"add `writable: true` to tag {tag.name!r} of asset {tag.asset!r} (its "
                "template's tag, if it comes from one) if the gateway may write it",
            )


def _same_place(
    target: ModbusTarget | OpcUaTarget, address: object, default_unit: int | None
) -> bool:
    """Whether a tag's address (the source connector's model) names what ``target`` writes;
    read through attributes so the core imports no connector."""
    if isinstance(target, OpcUaTarget):
        return getattr(address, "node", None) == target.node
    if getattr(address, "table", None) != target.table:
        return False
    unit = getattr(address, "unit", None)
    if (unit if unit is not None else default_unit) != (
        target.unit if target.unit is not None else default_unit
    ):
        return False
    start = getattr(address, "address", None)
    if not isinstance(start, int):
        return False
    count = getattr(address, "register_count", 1)
    end = start + (count if isinstance(count, int) else 1)
    return start < target.address + target.register_count and target.address < end


def _writable(spec: MappingFile, asset: str, tag: str) -> bool:
    config = spec.assets[asset]
    if tag in config.tags:
        return config.tags[tag].writable
    template = spec.templates.get(config.template or "")
    return template is not None and tag in template.tags and template.tags[tag].writable


def _near(word: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(known) or '(none)'}"
