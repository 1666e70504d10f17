"""The control map: the ISO 27001 and AI RMF controls each section gives evidence for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ISO_27001: Final = "ISO/IEC 27001:2022"
AI_RMF: Final = "NIST AI RMF 1.0"


@dataclass(frozen=True, slots=True)
class Control:
    """A control by number and name only. ISO names are the standard's control titles; NIST AI
    RMF subcategories have no titles, so ``name`` is a short label of our own for the number."""

    framework: str
    ref: str
    name: str

    @property
    def label(self) -> str:
        if self.framework == AI_RMF:
            return f"{self.framework} {self.ref} ({self.name})"
        return f"{self.framework} {self.ref} {self.name}"


def _iso(ref: str, name: str) -> Control:
    return Control(ISO_27001, ref, name)


def _rmf(ref: str, name: str) -> Control:
    return Control(AI_RMF, ref, name)


A_5_9 = _iso("A.5.9", "Inventory of information and other associated assets")
A_5_14 = _iso("A.5.14", "Information transfer")
A_5_15 = _iso("A.5.15", "Access control")
A_5_17 = _iso("A.5.17", "Authentication information")
A_5_18 = _iso("A.5.18", "Access rights")
A_5_33 = _iso("A.5.33", "Protection of records")
A_8_2 = _iso("A.8.2", "Privileged access rights")
A_8_5 = _iso("A.8.5", "Secure authentication")
A_8_9 = _iso("A.8.9", "Configuration management")
A_8_15 = _iso("A.8.15", "Logging")
A_8_16 = _iso("A.8.16", "Monitoring activities")
A_8_24 = _iso("A.8.24", "Use of cryptography")
A_8_32 = _iso("A.8.32", "Change management")
# Subcategory numbers checked against NIST AI 100-1 (AI RMF 1.0) and its Playbook.
GOVERN_1_6 = _rmf("GOVERN 1.6", "inventory of AI systems")
GOVERN_2_1 = _rmf("GOVERN 2.1", "roles and responsibilities for AI risks")
MAP_2_1 = _rmf("MAP 2.1", "tasks and methods of the AI system defined")
MAP_4_1 = _rmf("MAP 4.1", "risks of the AI system's components mapped")
MEASURE_2_4 = _rmf("MEASURE 2.4", "AI system monitored in production")
MEASURE_3_3 = _rmf("MEASURE 3.3", "feedback from users integrated into evaluation")
MANAGE_2_4 = _rmf("MANAGE 2.4", "supersede, disengage or deactivate AI systems")
MANAGE_4_1 = _rmf("MANAGE 4.1", "post-deployment monitoring, override, incident response")


@dataclass(frozen=True, slots=True)
class Family:
    """A control family of the report: one section (``ai.*``: one part of the AI risk one)."""

    key: str
    title: str
    controls: tuple[Control, ...]


# Which controls each section of the report gives evidence for. Docs reuse it as it is.
CONTROL_MAP: Final[tuple[Family, ...]] = (
    Family("inventory", "Asset inventory", (A_5_9, A_8_9, GOVERN_1_6)),
    Family("access", "Access control", (A_5_15, A_5_17, A_5_18, A_8_2, A_8_5)),
    Family("cryptography", "Cryptography", (A_8_24, A_5_14)),
    Family("logging", "Logging and monitoring", (A_8_15, A_8_16, A_5_33, MEASURE_2_4)),
    Family("changes", "Change management", (A_8_32, A_8_9)),
    Family("ai", "AI risk (NIST AI RMF 1.0: GOVERN, MAP, MEASURE, MANAGE)", ()),
    Family("ai.govern", "GOVERN", (GOVERN_1_6, GOVERN_2_1, A_8_2)),
    Family("ai.map", "MAP", (MAP_2_1, MAP_4_1)),
    Family("ai.measure", "MEASURE", (MEASURE_2_4, MEASURE_3_3)),
    Family("ai.manage", "MANAGE", (MANAGE_2_4, MANAGE_4_1)),
)


def family(key: str) -> Family:
    for f in CONTROL_MAP:
        if f.key == key:
            return f
    raise KeyError(key)
