"""The shared reference fold (``callback.reference``): every topic, tombstones, indexes that follow
replacements and deletes, invalid records that change nothing, ambiguous lookups, ``version``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from callback.reference import FOLDED_TOPICS, ReferenceData
from rating_stream.engine import CompiledTariff
from schemas.callback import PayerKind
from schemas.carrier_config import CarrierConfig, load_carrier_config
from schemas.rating import BalanceUpdate
from schemas.reference import CallingCard, Device
from schemas.topics import ACCOUNTS_BALANCES, AUTH_WEB_CREDENTIALS, CONFIG_TOPICS

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml"


@pytest.fixture(scope="module")
def config() -> CarrierConfig:
    return load_carrier_config(SAMPLE)


def _balance(payer_id: str = "alice", balance: str = "24.80", sequence: int = 1) -> BalanceUpdate:
    return BalanceUpdate(
        source="test",
        payer_kind=PayerKind.USER,
        payer_id=payer_id,
        balance=Decimal(balance),
        currency="USD",
        delta=Decimal("-0.20"),
        leg_id="leg-1",
        sequence=sequence,
        time=datetime(2026, 11, 3, 12, 0, tzinfo=UTC),
    )


def _one_record_per_topic(config: CarrierConfig) -> dict[str, tuple[str, BaseModel]]:
    """topic -> (key, record): the first record of each config topic, plus a balance."""
    out: dict[str, tuple[str, BaseModel]] = {}
    for topic, key, record in config.records():
        out.setdefault(topic, (key, record))
    out[ACCOUNTS_BALANCES.name] = ("user:alice", _balance())
    return out


#: topic -> the attribute of ``ReferenceData`` that holds its records
TABLES = {
    "config.callback_settings": "settings",
    "config.users": "users",
    "config.devices": "devices",
    "config.cards": "cards",
    "config.tariffs": "tariffs",
    "config.dids": "dids",
    "config.dialplans": "dialplans",
    "config.servers": "servers",
    "accounts.balances": "balances",
    "auth.web_credentials": "web_credentials",
}


def test_the_fold_covers_every_config_topic_the_balances_and_the_web_credentials():
    expected = {t.name for t in CONFIG_TOPICS} | {ACCOUNTS_BALANCES.name, AUTH_WEB_CREDENTIALS.name}
    assert set(TABLES) == expected == FOLDED_TOPICS


@pytest.mark.parametrize("topic", sorted(TABLES))
def test_a_record_of_each_topic_is_stored_by_key_and_a_tombstone_removes_it(config, topic):
    key, record = _one_record_per_topic(config)[topic]
    data = ReferenceData()
    data.apply(topic, key, record.model_dump_json().encode())
    table = getattr(data, TABLES[topic])
    assert list(table) == [key]
    stored = table[key]
    if topic == "config.tariffs":  # compiled once on arrival, not per leg
        assert isinstance(stored, CompiledTariff) and stored.tariff == record
    else:
        assert stored == record
    assert data.version == 1 and data.rejected == 0

    data.apply(topic, key, None)
    assert table == {} and data.version == 2


def test_lookups_answer_from_each_kind_of_record(config):
    data = ReferenceData()
    records = _one_record_per_topic(config)
    for topic, (key, record) in records.items():
        data.apply(topic, key, record.model_dump_json().encode())
    assert data.system_settings() == config.callback_settings
    assert data.balance("user:alice") == records[ACCOUNTS_BALANCES.name][1]
    assert data.card("8800100200") == config.cards[0]
    assert data.cards_by_pin("1111") == [config.cards[0]]
    did, plan = data.did_and_dialplan("2349012345678")
    assert did == config.dids[0] and plan == config.dialplans[0]  # cb-pin is the first dial plan


def test_access_numbers_are_the_dids_pinned_to_the_pbx_or_to_none(config):
    data = ReferenceData.from_carrier_config(config)
    pinned = config.dids[0].model_copy(update={"number": "2349000000001", "pbx_id": "pbx2"})
    unpinned = config.dids[0].model_copy(update={"number": "2349000000002", "pbx_id": None})
    for did in (pinned, unpinned):
        data.apply("config.dids", did.number, did.model_dump_json().encode())
    on_pbx1 = {d.number for d in config.dids if d.pbx_id in (None, "pbx1")} | {unpinned.number}
    assert data.access_numbers("pbx1") == on_pbx1 and pinned.number not in on_pbx1
    assert data.access_numbers("pbx2") == {d.number for d in config.dids if d.pbx_id is None} | {
        pinned.number,
        unpinned.number,
    }
    data.apply("config.dids", unpinned.number, None)  # a deleted DID is no access number anywhere
    assert unpinned.number not in data.access_numbers("pbx1") | data.access_numbers("pbx2")


def test_tombstones_clear_every_index_and_unknown_keys_change_nothing(config):
    data = ReferenceData.from_carrier_config(config)
    before = data.version
    data.apply("config.devices", "bob-home", None)
    assert data.device_by_number("12125550142") is None and data.device_by_number("12125550143") is None
    assert data.devices_by_pin("7315") == []
    data.apply("config.cards", "8800100202", None)
    assert data.card("8800100202") is None
    assert data.cards_by_pin("3333") == [] and data.card_by_pinless("2348059998888") is None
    data.apply("config.dialplans", "cb-ani", None)
    did, plan = data.did_and_dialplan("18005550199")
    assert did is not None and did.dialplan_id == "cb-ani" and plan is None
    data.apply("config.dids", "18005550199", None)
    assert data.did_and_dialplan("18005550199") == (None, None)
    data.apply("config.callback_settings", "system", None)
    assert data.system_settings() is None
    assert data.version == before + 5
    data.apply("config.devices", "no-such-device", None)
    assert data.version == before + 5, "a tombstone of an unknown key changed nothing"


def test_a_replaced_device_is_found_only_by_its_new_pin_and_numbers(config):
    data = ReferenceData.from_carrier_config(config)
    bob = data.devices["bob-home"]
    moved = bob.model_copy(update={"pin": "5555", "registered_numbers": ["12125550143", "12125550199"]})
    data.apply("config.devices", "bob-home", moved.model_dump_json().encode())
    assert data.devices_by_pin("7315") == []
    assert data.devices_by_pin("5555") == [moved]
    assert data.device_by_number("12125550142") is None, "old number still finds the device"
    assert data.device_by_number("12125550143") == moved
    assert data.device_by_number("12125550199") == moved
    no_pin = moved.model_copy(update={"pin": None})
    data.apply_model("config.devices", "bob-home", no_pin)
    assert data.devices_by_pin("5555") == [] and data.device_by_number("12125550199") == no_pin


def test_a_replaced_card_is_found_only_by_its_new_pin_and_pinless_numbers(config):
    data = ReferenceData.from_carrier_config(config)
    card = data.card("8800100202")
    changed = card.model_copy(update={"pin": "4444", "pinless_numbers": ["2348050000000"]})
    data.apply("config.cards", "8800100202", changed.model_dump_json().encode())
    assert data.cards_by_pin("3333") == [] and data.cards_by_pin("4444") == [changed]
    assert data.card_by_pinless("2348059998888") is None
    assert data.card_by_pinless("2348050000000") == changed
    assert data.card("8800100202") == changed


@pytest.mark.parametrize("topic", sorted(TABLES))
@pytest.mark.parametrize(
    "bad",
    [b"{not json", b"\xff\xfe", b"[]", b'{"unknown_field": 1}'],
    ids=["malformed", "not-utf8", "not-an-object", "wrong-shape"],
)
def test_an_invalid_record_is_counted_and_the_previous_value_stays(config, topic, bad, caplog):
    key, record = _one_record_per_topic(config)[topic]
    data = ReferenceData()
    data.apply(topic, key, record.model_dump_json().encode())
    table = getattr(data, TABLES[topic])
    before = table[key]
    with caplog.at_level(logging.ERROR, logger="callback.reference"):
        data.apply(topic, key, bad)
    assert table[key] is before
    assert data.rejected == 1 and data.version == 1
    assert topic in caplog.text and repr(key) in caplog.text


def test_a_record_filed_under_another_key_is_rejected(config):
    data = ReferenceData.from_carrier_config(config)
    alice = data.users["alice"]
    data.apply("config.users", "bob", alice.model_dump_json().encode())
    assert data.users["bob"].user_id == "bob" and data.rejected == 1
    tariff = config.tariffs[0]
    data.apply("config.tariffs", "other", tariff.model_dump_json().encode())
    assert "other" not in data.tariffs and data.rejected == 2
    data.apply(ACCOUNTS_BALANCES.name, "card:8800100200", _balance().model_dump_json().encode())
    assert data.balance("card:8800100200") is None and data.rejected == 3


def test_a_device_that_breaks_validation_keeps_its_old_indexes(config):
    data = ReferenceData.from_carrier_config(config)
    data.apply("config.devices", "bob-home", b'{"device_id": "bob-home", "user_id": "bob", "pin": "12"}')
    assert data.rejected == 1
    assert [d.device_id for d in data.devices_by_pin("7315")] == ["bob-home"]
    assert data.device_by_number("12125550142").device_id == "bob-home"


def test_records_of_other_topics_are_ignored(config):
    data = ReferenceData()
    data.apply("callback.legs", "cb-1", b"{}")
    data.apply("pbx.events", "cb-1", None)
    data.apply_model("cdr.rated", "leg-1", config.users[0])
    assert (data.version, data.rejected, data.users) == (0, 0, {})


def test_a_model_of_the_wrong_type_is_a_programming_error(config):
    with pytest.raises(TypeError, match="config.users holds User"):
        ReferenceData().apply_model("config.users", "pbx1", config.servers[0])


def test_a_shared_registered_number_is_ambiguous_and_warned_once(config, caplog):
    data = ReferenceData.from_carrier_config(config)
    twin = Device(device_id="bob-twin", user_id="alice", registered_numbers=["12125550142"])
    data.apply_model("config.devices", "bob-twin", twin)
    with caplog.at_level(logging.WARNING, logger="callback.reference"):
        assert data.device_by_number("12125550142") is None
        assert data.device_by_number("12125550142") is None
    warnings = [r for r in caplog.records if "12125550142" in r.getMessage()]
    assert len(warnings) == 1 and "'bob-home', 'bob-twin'" in warnings[0].getMessage()
    assert data.device_by_number("12125550143").device_id == "bob-home", "bob's other number is his"
    data.apply("config.devices", "bob-twin", None)
    assert data.device_by_number("12125550142").device_id == "bob-home"


def test_a_shared_pinless_number_is_ambiguous(config, caplog):
    data = ReferenceData.from_carrier_config(config)
    other = CallingCard(number="8800100299", pin="9999", tariff_id="t", pinless_numbers=["2348059998888"])
    data.apply_model("config.cards", other.number, other)
    with caplog.at_level(logging.WARNING, logger="callback.reference"):
        assert data.card_by_pinless("2348059998888") is None
    assert "pinless number '2348059998888'" in caplog.text
    data.apply_model("config.cards", other.number, other.model_copy(update={"pinless_numbers": []}))
    assert data.card_by_pinless("2348059998888").number == "8800100202"


def test_a_number_that_becomes_ambiguous_again_is_warned_again(config, caplog):
    data = ReferenceData.from_carrier_config(config)
    twin = Device(device_id="twin", user_id="alice", registered_numbers=["2341234567"])
    with caplog.at_level(logging.WARNING, logger="callback.reference"):
        data.apply_model("config.devices", "twin", twin)
        data.device_by_number("2341234567")
        data.apply("config.devices", "twin", None)
        data.apply_model("config.devices", "twin", twin)
        data.device_by_number("2341234567")
    assert len([r for r in caplog.records if "2341234567" in r.getMessage()]) == 2


def test_pin_lookups_return_every_holder_sorted_by_id(config):
    data = ReferenceData()
    for device_id in ("zed", "amy", "kim"):
        data.apply_model("config.devices", device_id, Device(device_id=device_id, user_id="u", pin="1234"))
    assert [d.device_id for d in data.devices_by_pin("1234")] == ["amy", "kim", "zed"]
    for number in ("9000000003", "9000000001"):
        card = CallingCard(number=number, pin="4321", tariff_id="t")
        data.apply("config.cards", number, card.model_dump_json().encode())
    assert [c.number for c in data.cards_by_pin("4321")] == ["9000000001", "9000000003"]
    assert data.devices_by_pin("0000") == [] and data.cards_by_pin("0000") == []


def test_version_counts_changes_only(config):
    data = ReferenceData()
    user = config.users[1]
    data.apply("config.users", user.user_id, user.model_dump_json().encode())
    assert data.version == 1
    data.apply("config.users", user.user_id, user.model_dump_json().encode())  # an upsert is a change
    assert data.version == 2
    data.apply("config.users", user.user_id, b"{broken")
    data.apply("config.users", "nobody", None)
    data.apply("pbx.events", "x", b"{}")
    assert data.version == 2
    data.apply("config.users", user.user_id, None)
    assert data.version == 3


def test_the_latest_balance_per_payer_wins():
    data = ReferenceData()
    for sequence, balance in ((1, "24.80"), (2, "24.60"), (3, "24.52")):
        record = _balance(balance=balance, sequence=sequence)
        data.apply(ACCOUNTS_BALANCES.name, "user:alice", record.model_dump_json().encode())
    latest = data.balance("user:alice")
    assert latest is not None and (latest.balance, latest.sequence) == (Decimal("24.52"), 3)
    assert data.balance("user:bob") is None


def test_from_carrier_config_holds_the_whole_sample(config):
    data = ReferenceData.from_carrier_config(config)
    assert set(data.users) == {u.user_id for u in config.users}
    assert set(data.devices) == {d.device_id for d in config.devices}
    assert set(data.cards) == {c.number for c in config.cards}
    assert set(data.tariffs) == {t.tariff_id for t in config.tariffs}
    assert set(data.dids) == {d.number for d in config.dids}
    assert set(data.dialplans) == {p.dialplan_id for p in config.dialplans}
    assert set(data.servers) == {s.server_id for s in config.servers}
    assert set(data.settings) == {"system"} and data.balances == {}
    assert set(data.web_credentials) == {u.user_id for u in config.users}
    assert data.version == 27 and data.rejected == 0  # `config load` publishes 27 records
    assert data.tariffs["retail-usd"].rate_for("34911222333").rate_per_minute == Decimal("0.08")
    assert data.device_by_number("12125550143").device_id == "bob-home"
    assert [d.device_id for d in data.devices_by_pin("90210")] == ["chidi-office"]
    assert data.card_by_pinless("2348059998888").number == "8800100202"
    did, plan = data.did_and_dialplan("18005550199")
    assert did.settings.wait_time_s == 45 and plan.dialplan_id == "cb-ani"
    assert data.system_settings().callback_user_id == "cb-owner"
    assert "3 tariffs" in data.summary() and "4 devices" in data.summary()


def test_folding_bytes_and_folding_models_give_the_same_view(config):
    from_models = ReferenceData.from_carrier_config(config)
    from_bytes = ReferenceData()
    for topic, key, record in config.records():
        from_bytes.apply(topic, key, record.model_dump_json().encode())
    for attr in ("users", "devices", "cards", "settings", "dids", "dialplans", "servers"):
        assert getattr(from_bytes, attr) == getattr(from_models, attr), attr
    assert {k: t.tariff for k, t in from_bytes.tariffs.items()} == {
        k: t.tariff for k, t in from_models.tariffs.items()
    }
