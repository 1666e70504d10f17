"""OPC UA settings validation: addresses, security consistency, server settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.connectors.opcua import OpcUaAddress, OpcUaServerSettings, OpcUaSourceSettings


def test_address_shorthand_and_full_form() -> None:
    short = OpcUaAddress.model_validate("nsu=urn:bridge:sim:plant;s=Pump01.Speed")
    full = OpcUaAddress.model_validate(
        {"node": "nsu=urn:bridge:sim:plant;s=Pump01.Speed", "sampling_interval_ms": 50}
    )
    assert short.node == full.node
    assert short.sampling_interval_ms is None and full.sampling_interval_ms == 50


def test_address_with_namespace_index_names_the_fix() -> None:
    with pytest.raises(ValidationError, match="use the namespace URI"):
        OpcUaAddress.model_validate("ns=2;s=Pump01.Speed")


def test_address_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        OpcUaAddress.model_validate({"node": "nsu=urn:x;i=1", "ns": 2})


def test_source_defaults() -> None:
    s = OpcUaSourceSettings(endpoint="opc.tcp://127.0.0.1:4840")
    assert (s.publishing_interval_ms, s.sampling_interval_ms, s.queue_size) == (100, 0, 10000)
    assert (s.timeout_s, s.watchdog_s) == (4, 10)
    assert s.security.policy == "None" and s.security.mode == "None"


@pytest.mark.parametrize(
    "data",
    [
        {"endpoint": "http://127.0.0.1:4840"},
        {"endpoint": "opc.tcp://h:1", "security": {"policy": "Basic256Sha256", "mode": "None"}},
        {"endpoint": "opc.tcp://h:1", "security": {"policy": "None", "mode": "Sign"}},
        {"endpoint": "opc.tcp://h:1", "security": {"policy": "Basic256Sha256", "mode": "Sign"}},
        {"endpoint": "opc.tcp://h:1", "security": {"policy": "Basic128Rsa15", "mode": "Sign"}},
        {"endpoint": "opc.tcp://h:1", "password": "x"},
        {"endpoint": "opc.tcp://h:1", "queue_size": 0},
        {"endpoint": "opc.tcp://h:1", "kind": "opcua"},
    ],
)
def test_invalid_source_settings(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OpcUaSourceSettings.model_validate(data)


def test_secured_source_with_certificate() -> None:
    s = OpcUaSourceSettings.model_validate(
        {
            "endpoint": "opc.tcp://h:1",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": "client.der",
                "private_key": "client.pem",
            },
            "username": "op",
            "password": "pw",
        }
    )
    assert s.security.mode == "SignAndEncrypt"


def test_server_settings() -> None:
    # secure by default: without a certificate only an explicit None is possible
    with pytest.raises(ValidationError, match="certificate"):
        OpcUaServerSettings()
    s = OpcUaServerSettings(certificate="c.der", private_key="k.pem")
    assert s.endpoint == "opc.tcp://127.0.0.1:4850" and "None" not in s.security_policies
    assert {p.rsplit("_", 1)[0] for p in s.security_policies} == {
        "Basic256Sha256",
        "Aes128_Sha256_RsaOaep",
        "Aes256_Sha256_RsaPss",
    }
    assert s.allow_anonymous is False
    assert OpcUaServerSettings(security_policies=["None"]).security_policies == ["None"]
    with pytest.raises(ValidationError, match="certificate"):
        OpcUaServerSettings(security_policies=["Basic256Sha256_SignAndEncrypt"])
    with pytest.raises(ValidationError):
        OpcUaServerSettings.model_validate({"security_policies": ["Basic128Rsa15"]})
    with pytest.raises(ValidationError, match="duplicate"):
        OpcUaServerSettings.model_validate(
            {
                "security_policies": ["None"],
                "users": [{"username": "a", "password": "x"}, {"username": "a", "password": "y"}],
            }
        )


def test_register_adds_both_kinds() -> None:
    from bridge import plugins
    from bridge.connectors.opcua import register

    register()
    assert plugins._sources["opcua"].address_model is OpcUaAddress
    assert plugins._sinks["opcua-server"].settings_model is OpcUaServerSettings


def test_address_by_browse_path() -> None:
    a = OpcUaAddress.model_validate({"path": "Plant/Pump01/Speed", "namespace": "urn:x"})
    assert a.node is None and a.path == "Plant/Pump01/Speed"
    with pytest.raises(ValidationError, match="namespace"):
        OpcUaAddress.model_validate({"path": "Plant/Pump01/Speed"})
    with pytest.raises(ValidationError, match="either node"):
        OpcUaAddress.model_validate({"node": "nsu=urn:x;s=a", "path": "a", "namespace": "urn:x"})


def test_source_identity_choices() -> None:
    base = {"endpoint": "opc.tcp://h:4840"}
    with pytest.raises(ValidationError, match="not both"):
        OpcUaSourceSettings.model_validate(
            {**base, "username": "u", "password": "p", "password_file": "f"}
        )
    with pytest.raises(ValidationError, match="one identity"):
        OpcUaSourceSettings.model_validate(
            {**base, "username": "u", "user_certificate": "c", "user_private_key": "k"}
        )
    with pytest.raises(ValidationError, match="go together"):
        OpcUaSourceSettings.model_validate({**base, "user_certificate": "c"})


def test_server_user_certificates() -> None:
    s = OpcUaServerSettings.model_validate(
        {
            "certificate": "c.der",
            "private_key": "k.pem",
            "user_certificates": [{"certificate": "alice.der", "role": "operator"}],
        }
    )
    assert s.user_certificates[0].role == "operator"
    assert s.user_certificates[0].name is None
    # The X.509 token is signed: a server offering only None cannot check it.
    with pytest.raises(ValidationError, match="user_certificates need a secured"):
        OpcUaServerSettings.model_validate(
            {"security_policies": ["None"], "user_certificates": [{"certificate": "a.der"}]}
        )
    with pytest.raises(ValidationError):
        OpcUaServerSettings.model_validate(
            {
                "certificate": "c.der",
                "private_key": "k.pem",
                "user_certificates": [{"certificate": "a.der", "role": "admin"}],
            }
        )


@pytest.mark.parametrize(
    "text",
    [
        "nsu=urn:x;s=Pump01.Speed",
        "nsu=urn:x;i=70000",
        "nsu=urn:x;i=abc",
        "nsu=urn:x;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "nsu=urn:x;g=nope",
        "ns=2;s=Pump01.Speed",
        "nsu=urn:x;s=",
        "Pump01.Speed",
    ],
)
def test_quick_address_is_what_validation_builds(text: str) -> None:
    from bridge.connectors.opcua import _quick_address

    quick = _quick_address(text)
    try:
        validated: OpcUaAddress | None = OpcUaAddress.model_validate(text)
    except ValidationError:
        validated = None
    # None hands the address to the model, which reports what is wrong with it.
    assert quick == validated
    if quick is not None and validated is not None:
        assert quick.model_fields_set == validated.model_fields_set
        assert quick.model_dump() == validated.model_dump()
        with pytest.raises(ValidationError):
            quick.node = "nsu=urn:y;s=z"  # type: ignore[misc]  # frozen like the validated one


def test_quick_address_leaves_blocks_to_the_model() -> None:
    from bridge.connectors.opcua import _quick_address

    assert _quick_address({"node": "nsu=urn:x;s=a", "sampling_interval_ms": 50}) is None


def test_quick_addresses_do_not_share_changes() -> None:
    from bridge.connectors.opcua import _quick_address

    a, b = _quick_address("nsu=urn:x;s=a"), _quick_address("nsu=urn:x;s=b")
    assert a is not None and b is not None
    changed = a.model_copy(update={"sampling_interval_ms": 5.0})
    assert changed.model_fields_set == {"node", "sampling_interval_ms"}
    assert a.model_fields_set == b.model_fields_set == {"node"}
