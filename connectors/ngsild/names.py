"""What NGSI-LD lets us call things: entity ids (URNs), entity types and attribute names.

ETSI GS CIM 009 clause 4.6.2: an Entity Type, Property or Relationship name is a letter
followed by letters, digits and ``_`` (Unicode letters and numbers); annex A: an Entity id
is a URI, here a URN ``urn:ngsi-ld:<Type>:<name>`` (RFC 8141) whose parts keep the unreserved
characters of RFC 3986 and percent-encode every other one.

Mapping names already fit: asset, template and model names are ``[A-Za-z][A-Za-z0-9_-]*`` and
tag names ``[a-z][a-z0-9_]*``. ISA-95 levels may hold any character but ``/ + #``, so they are
percent-encoded in ids. Entity types written in the settings are checked, not changed.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "RESERVED",
    "check_type",
    "entity_urn",
    "is_name",
    "model_property",
    "tag_property",
    "type_of_template",
]

# Names an attribute of ours must not take: the members NGSI-LD gives a meaning of its own
# (clauses 5.2.4-5.2.6) and the terms of the ETSI core @context (a term it defines wins
# over ours: the core context is the last one, and it is protected). A tag called like one of
# these, or like a term of ours, is published as ``tag_<name>``.
RESERVED = frozenset((
    "id", "type", "scope", "location", "observationSpace", "operationSpace", "createdAt",
    "modifiedAt", "deletedAt", "observedAt", "unitCode", "datasetId", "instanceId", "value",
    "object", "objectType", "languageMap", "vocab", "valueList", "objectList", "json", "jsonKeys",
    "previousValue", "previousObject", "previousLanguageMap", "previousVocab",
    "previousValueList", "previousObjectList", "previousJson", "valueType", "entity", "accept",
    "attributeCount", "attributeDetails", "attributeList", "attributeName", "attributeNames",
    "attributeTypes", "attributes", "attrs", "avg", "bbox", "cacheDuration", "containedBy",
    "contextSourceAlias", "contextSourceExtras", "contextSourceInfo", "contextSourceTimeAt",
    "contextSourceUptime", "cooldown", "coordinates", "csf", "data", "dataset", "description",
    "detail", "distinctCount", "endAt", "endTimeAt", "endpoint", "entities", "entityCount",
    "entityId", "entityList", "entityMap", "error", "errors", "expiresAt", "features", "format",
    "geoQ", "geometry", "geoproperty", "georel", "idPattern", "information", "isActive", "join",
    "joinLevel", "jsonldContext", "jsons", "key", "lang", "languageMaps", "lastFailure",
    "lastNotification", "lastSuccess", "linkedMaps", "localOnly", "management",
    "managementInterval", "max", "min", "mode", "notification", "notificationTrigger",
    "notifiedAt", "notifierInfo", "notUpdated", "objects", "objectsLists", "observationInterval",
    "operations", "properties", "propertyNames", "q", "reason", "receiverInfo", "refreshRate",
    "registrationId", "registrationName", "relationshipNames", "relationships", "scopeQ",
    "showChanges", "startAt", "status", "stddev", "subscriptionId", "subscriptionName", "success",
    "sum", "sumsq", "sysAttrs", "temporalQ", "tenant", "throttling", "timeAt", "timeInterval",
    "timeout", "timeproperty", "timerel", "timesFailed", "timesSent", "title", "totalCount",
    "triggerReason", "typeList", "typeName", "typeNames", "updated", "uri", "valueLists",
    "values", "vocabs", "watchedAttributes",
    # ... and this connector's own terms (context.json)
    "isPartOf", "levelName",
))  # fmt: skip


def is_name(text: str) -> bool:
    """A valid NGSI-LD name (clause 4.6.2): a letter, then letters, digits or ``_``."""
    return (
        bool(text)
        and text[0].isalpha()
        and all(c.isalpha() or c.isnumeric() or c == "_" for c in text)
    )


def check_type(text: str) -> str:
    """``text`` if it can be an entity type; else a ``ValueError`` saying what to write."""
    if not is_name(text):
        raise ValueError(
            f"{text!r} is not an NGSI-LD entity type: start with a letter and use only letters, "
            "digits and _ (e.g. Pump, CentrifugalPump, Pump_v2)"
        )
    return text


def _words(name: str) -> list[str]:
    return [w for w in name.replace("-", "_").split("_") if w]


def type_of_template(template: str) -> str:
    """The entity type of a template: ``pump`` -> ``Pump``, ``pump-station`` ->
    ``PumpStation`` (a template name starts with a letter, so this is always a valid name)."""
    return "".join(w[0].upper() + w[1:] for w in _words(template))


def model_property(model: str) -> str:
    """The Property holding a model's latest prediction: ``pump-health`` ->
    ``pumpHealthPrediction``. The capital letters keep it apart from every tag's name."""
    words = _words(model)
    head = words[0][0].lower() + words[0][1:]
    return head + "".join(w[0].upper() + w[1:] for w in words[1:]) + "Prediction"


def tag_property(tag: str) -> str:
    """The Property of a tag: its name, or ``tag_<name>`` when NGSI-LD reserves the name."""
    return f"tag_{tag}" if tag in RESERVED else tag


def _nss(part: str) -> str:
    # Unreserved characters stay; everything else (":" included: it separates the parts) is
    # percent-encoded as UTF-8, which RFC 8141 allows in a URN's name.
    return quote(part, safe="-._~")


def entity_urn(entity_type: str, *parts: str) -> str:
    """``urn:ngsi-ld:<type>:<part>[:<part>...]``, each part percent-encoded as needed."""
    # A type may hold any Unicode letter (clause 4.6.2): encoded as well, so the id is a URI.
    return ":".join(("urn:ngsi-ld", _nss(entity_type), *(_nss(p) for p in parts)))
