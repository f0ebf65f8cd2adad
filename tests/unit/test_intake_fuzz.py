"""Random JSON thrown at the intake validator: it only ever answers, never raises."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.intake import ACCEPTED_KEYS, Accepted, Rejected, validate_intake
from tests.unit.test_intake import CATALOG, NOW, payload

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
# Values that look like what the keys want, so the deeper rules run too.
plausible = st.sampled_from(
    [
        "acme",
        "Business",
        "Hosted IP PBX",
        "monthly",
        "30_days",
        "UTC",
        "Europe/Paris",
        "prepaid",
        "postpaid",
        "USD",
        "JPY",
        "0",
        "-1",
        "12.345",
        "2026-03-01T00:00:00Z",
        "2030-03-01T00:00:00+05:00",
        "",
        " ",
        "\x00",
        "\ud800",
    ]
)
custom_data = st.dictionaries(
    st.sampled_from(
        ["tax_code", "seats", "discount", "paperless", "contract_start", "billing_contact", "x"]
    ),
    json_values | plausible,
    max_size=7,
)


def _check(outcome: object) -> None:
    assert isinstance(outcome, Accepted | Rejected)
    if isinstance(outcome, Rejected):
        assert outcome.errors
        for error in outcome.errors:
            assert set(error) == {"field", "code", "message"}
            assert error["field"] is None or isinstance(error["field"], str)
            assert isinstance(error["code"], str)
            assert error["code"].replace("_", "").isalpha()
            assert isinstance(error["message"], str)
            assert error["message"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_gets_an_answer(data: Any) -> None:
    """Whatever JSON arrives, the validator returns an acceptance or a structured rejection."""
    _check(validate_intake(data, CATALOG, now=NOW))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from([*ACCEPTED_KEYS, "unknown", "Name"]),
        json_values | plausible,
        max_size=len(ACCEPTED_KEYS) + 2,
    ),
    custom_data,
)
def test_any_object_of_intake_keys_gets_an_answer(changes: dict[str, Any], data: Any) -> None:
    """A valid payload with random values swapped in never makes the validator raise."""
    body = payload(**changes)
    if "custom_data" not in changes:
        body["custom_data"] = data
    _check(validate_intake(body, CATALOG, now=NOW))


@settings(max_examples=100)
@given(st.datetimes(timezones=st.timezones()))
def test_any_aware_creation_instant_gets_an_answer(created_at: dt.datetime) -> None:
    """Creation instants anywhere in the calendar are accepted or rejected, never raised on."""
    _check(validate_intake(payload(created_at=created_at.isoformat()), CATALOG, now=NOW))
