"""Intake validation rules (models/intake.py): pure, every failure reported at once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from models.intake import (
    MAX_PAYLOAD_BYTES,
    Accepted,
    Catalog,
    CatalogClass,
    CustomField,
    Rejected,
    validate_intake,
)
from tests.factories import DROP, intake_payload

NOW = dt.datetime(2026, 3, 19, 12, 0, tzinfo=dt.UTC)

CATALOG = Catalog(
    resellers={"acme": 1},
    business_models={"Hosted IP PBX": 2},
    customer_classes={
        "Business": CatalogClass(
            3,
            (
                CustomField("tax_code", "string", mandatory=True),
                CustomField("seats", "integer"),
                CustomField("discount", "decimal"),
                CustomField("paperless", "boolean"),
                CustomField("contract_start", "date"),
                CustomField("billing_contact", "email"),
            ),
        ),
        "Plain": CatalogClass(4),
    },
)


payload = intake_payload


def accepted(data: object) -> Accepted:
    outcome = validate_intake(data, CATALOG, now=NOW)
    assert isinstance(outcome, Accepted), getattr(outcome, "errors", outcome)
    return outcome


def errors(data: object) -> list[tuple[str | None, str]]:
    outcome = validate_intake(data, CATALOG, now=NOW)
    assert isinstance(outcome, Rejected), outcome
    for error in outcome.errors:
        assert set(error) == {"field", "code", "message"}
        assert isinstance(error["message"], str)
        assert error["message"]
    return [(e["field"], e["code"]) for e in outcome.errors]


# --- a valid request ------------------------------------------------------------------------


def test_the_issue_example_is_accepted_with_catalog_ids() -> None:
    """The example payload from the issue is accepted and resolved to catalog ids."""
    outcome = accepted(payload(idempotency_key="k-1", created_at="2026-03-01T09:30:00-05:00"))

    assert (outcome.reseller_id, outcome.business_model_id, outcome.customer_class_id) == (1, 2, 3)
    assert outcome.intake.credit_limit == Decimal("500.00")
    assert outcome.intake.created_at == dt.datetime(2026, 3, 1, 14, 30, tzinfo=dt.UTC)
    assert outcome.intake.idempotency_key == "k-1"


def test_prepaid_customer_carries_available_funds() -> None:
    """A prepaid request takes available_funds instead of a credit limit."""
    outcome = accepted(
        payload(balance_control="prepaid", credit_limit=DROP, available_funds="100.00")
    )

    assert outcome.intake.available_funds == Decimal("100.00")
    assert outcome.intake.credit_limit is None


def test_prepaid_without_funds_means_zero_funds() -> None:
    """A prepaid request without available_funds starts with zero funds."""
    outcome = accepted(payload(balance_control="prepaid", credit_limit=DROP))

    assert outcome.intake.available_funds == Decimal(0)


def test_postpaid_without_credit_limit_means_no_limit() -> None:
    """A postpaid request may leave the credit limit out (no limit)."""
    assert accepted(payload(credit_limit=DROP)).intake.credit_limit is None


def test_null_optional_keys_count_as_absent() -> None:
    """An explicit null for an optional key is the same as leaving it out."""
    outcome = accepted(payload(credit_limit=None, idempotency_key=None, created_at=None))

    assert outcome.intake.credit_limit is None
    assert outcome.intake.created_at is None


# --- name -----------------------------------------------------------------------------------


def test_name_is_trimmed() -> None:
    """Surrounding whitespace is removed from the stored name."""
    assert accepted(payload(name="  Globex Corp\t")).intake.name == "Globex Corp"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (DROP, "required"),
        (None, "required"),
        ("", "blank"),
        ("   ", "blank"),
        ("x" * 101, "too_long"),
        ("Globex\x00Corp", "control_characters"),
        ("Globex\nCorp", "control_characters"),
        ("Globex\u2028Corp", "control_characters"),
        (42, "invalid_type"),
        (["Globex"], "invalid_type"),
    ],
)
def test_bad_names_are_rejected(name: object, code: str) -> None:
    """A missing, blank, too long, non-text or control-character name is rejected."""
    assert errors(payload(name=name)) == [("name", code)]


def test_a_name_of_exactly_100_characters_after_trimming_is_accepted() -> None:
    """The length limit applies to the trimmed name."""
    assert accepted(payload(name="  " + "x" * 100 + "  ")).intake.name == "x" * 100


def test_format_characters_such_as_zero_width_joiners_are_allowed_in_names() -> None:
    """Zero-width joiners are part of some scripts and are not control characters."""
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # Persian, with a ZWNJ
    assert accepted(payload(name=name)).intake.name == name


# --- catalog references ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["reseller", "business_model", "customer_class"])
def test_catalog_names_must_exist(key: str) -> None:
    """A reseller, business model or customer class that is not in the catalog is rejected."""
    assert ("not_found") in [
        code for field, code in errors(payload(**{key: "Nope"})) if field == key
    ]


# --- billing period, timezone, balance control, currency ------------------------------------


@pytest.mark.parametrize(
    "rule", ["daily", "weekly", "semimonthly", "monthly", "monthly_anniversary", "30_days"]
)
def test_each_of_the_six_billing_periods_is_accepted(rule: str) -> None:
    """Every billing-period rule of the contract is accepted."""
    assert accepted(payload(billing_period=rule)).intake.billing_period == rule


@pytest.mark.parametrize("rule", ["yearly", "Monthly", " monthly", "30 days", ""])
def test_other_billing_periods_are_rejected(rule: str) -> None:
    """Only the exact rule values are billing periods."""
    assert errors(payload(billing_period=rule)) == [("billing_period", "unknown_billing_period")]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Madrid", "Asia/Kathmandu", "America/St_Johns"])
def test_iana_timezones_are_accepted(tz: str) -> None:
    """Exact IANA zone names are accepted."""
    assert accepted(payload(billing_timezone=tz)).intake.billing_timezone == tz


@pytest.mark.parametrize(
    "tz", ["america/new_york", "America/New_York ", "Mars/Olympus", "localtime", "+05:00", "../etc"]
)
def test_other_timezones_are_rejected(tz: str) -> None:
    """Names that are not exact IANA zone names are rejected."""
    assert errors(payload(billing_timezone=tz)) == [("billing_timezone", "unknown_timezone")]


def test_balance_control_must_be_prepaid_or_postpaid() -> None:
    """Balance control other than prepaid/postpaid is rejected."""
    assert errors(payload(balance_control="credit")) == [("balance_control", "invalid_choice")]


@pytest.mark.parametrize("currency", ["usd", "US", "ZZZ", "XAU", "USD "])
def test_currency_must_be_a_billable_iso_4217_code(currency: str) -> None:
    """Unknown, lower-case and non-money ISO codes are rejected."""
    assert errors(payload(currency=currency)) == [("currency", "unknown_currency")]


# --- amounts --------------------------------------------------------------------------------


def test_credit_limit_is_not_allowed_for_prepaid() -> None:
    """A prepaid customer cannot have a credit limit."""
    assert errors(payload(balance_control="prepaid")) == [("credit_limit", "not_allowed")]


def test_available_funds_are_not_allowed_for_postpaid() -> None:
    """A postpaid customer cannot have available funds."""
    assert errors(payload(available_funds="10.00")) == [("available_funds", "not_allowed")]


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("-1.00", "negative"),
        ("500.001", "too_many_decimals"),
        ("1e3", "invalid_decimal"),
        ("NaN", "invalid_decimal"),
        ("Infinity", "invalid_decimal"),
        ("1,000.00", "invalid_decimal"),
        ("\uff11\uff12", "invalid_decimal"),  # full-width digits
        ("", "invalid_decimal"),
        ("100000000000000", "too_large"),
        (500.0, "invalid_type"),
        (True, "invalid_type"),
        ({"amount": "1"}, "invalid_type"),
    ],
)
def test_bad_credit_limits_are_rejected(amount: object, code: str) -> None:
    """Amounts must be non-negative plain decimals within the currency's decimals."""
    assert errors(payload(credit_limit=amount)) == [("credit_limit", code)]


@pytest.mark.parametrize(
    ("currency", "amount", "ok"),
    [
        ("JPY", "1500", True),
        ("JPY", "1500.5", False),
        ("JPY", "1500.0", True),
        ("BHD", "10.125", True),
        ("BHD", "10.1255", False),
        ("USD", 500, True),
    ],
)
def test_decimals_are_limited_by_the_currency(currency: str, amount: object, ok: bool) -> None:
    """The number of significant decimals may not exceed the currency's minor units."""
    data = payload(
        currency=currency, balance_control="prepaid", credit_limit=DROP, available_funds=amount
    )
    if ok:
        assert accepted(data).intake.available_funds == Decimal(str(amount))
    else:
        assert errors(data) == [("available_funds", "too_many_decimals")]


def test_zero_and_negative_zero_are_zero() -> None:
    """Zero is accepted, and -0 is stored as 0."""
    outcome = accepted(
        payload(balance_control="prepaid", credit_limit=DROP, available_funds="-0.00")
    )
    assert str(outcome.intake.available_funds) == "0.00"


# --- custom data ----------------------------------------------------------------------------


def test_custom_data_values_are_normalised_to_their_field_types() -> None:
    """Custom values in their JSON type or text form are stored in one normal form."""
    data = {
        "tax_code": "X1",
        "seats": "12",
        "discount": "2.50",
        "paperless": "TRUE",
        "contract_start": "2026-03-01",
        "billing_contact": " ap@globex.example ",
    }
    outcome = accepted(payload(custom_data=data))

    assert outcome.intake.custom_data == {
        "tax_code": "X1",
        "seats": 12,
        "discount": "2.50",
        "paperless": True,
        "contract_start": "2026-03-01",
        "billing_contact": "ap@globex.example",
    }


def test_custom_data_in_json_types_is_accepted() -> None:
    """Native JSON values of the right type are accepted as they are."""
    data = {"tax_code": "X1", "seats": 3, "discount": 5, "paperless": False}
    assert accepted(payload(custom_data=data)).intake.custom_data == {
        "tax_code": "X1",
        "seats": 3,
        "discount": "5",
        "paperless": False,
    }


def test_mandatory_custom_fields_must_be_present() -> None:
    """A mandatory field of the class that is missing (or null) is reported by name."""
    assert errors(payload(custom_data={})) == [("custom_data.tax_code", "missing_custom_field")]
    assert errors(payload(custom_data={"tax_code": None})) == [
        ("custom_data.tax_code", "missing_custom_field")
    ]
    assert errors(payload(custom_data=DROP)) == [("custom_data.tax_code", "missing_custom_field")]


def test_fields_the_class_does_not_define_are_rejected() -> None:
    """Custom data may only hold the class's fields."""
    assert errors(payload(custom_data={"tax_code": "X1", "colour": "red"})) == [
        ("custom_data.colour", "unknown_custom_field")
    ]


def test_a_class_without_custom_fields_accepts_no_custom_data() -> None:
    """A class with no custom fields rejects any custom data key."""
    assert accepted(payload(customer_class="Plain", custom_data={})).intake.custom_data == {}
    assert errors(payload(customer_class="Plain")) == [
        ("custom_data.tax_code", "unknown_custom_field")
    ]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("tax_code", 12, "invalid_type"),
        ("tax_code", "a\x00b", "control_characters"),
        ("tax_code", "x" * 1001, "too_long"),
        ("seats", "twelve", "invalid_value"),
        ("seats", 1.5, "invalid_type"),
        ("seats", True, "invalid_type"),
        ("seats", 10**18, "too_large"),
        ("discount", 2.5, "invalid_type"),
        ("discount", "2,5", "invalid_value"),
        ("paperless", "yes", "invalid_value"),
        ("paperless", 1, "invalid_type"),
        ("contract_start", "2026-02-30", "invalid_value"),
        ("contract_start", "20260301", "invalid_value"),
        ("contract_start", 20260301, "invalid_type"),
        ("billing_contact", "not an email", "invalid_value"),
        ("billing_contact", "a@b", "invalid_value"),
        ("billing_contact", ["a@b.example"], "invalid_type"),
    ],
)
def test_custom_values_of_the_wrong_type_are_rejected(field: str, value: object, code: str) -> None:
    """Each custom field type refuses values that are not of it."""
    data = {"tax_code": "X1", field: value}
    assert errors(payload(custom_data=data)) == [(f"custom_data.{field}", code)]


@pytest.mark.parametrize("custom_data", [[], "tax_code=X1", 5])
def test_custom_data_must_be_an_object(custom_data: object) -> None:
    """custom_data that is not a JSON object is a type error."""
    assert ("custom_data", "invalid_type") in errors(payload(custom_data=custom_data))


# --- created_at -----------------------------------------------------------------------------


def test_created_at_may_be_now_or_in_the_past() -> None:
    """An import's creation instant at or before now is accepted and kept in UTC."""
    assert accepted(payload(created_at="2026-03-19T12:00:00Z")).intake.created_at == NOW
    assert accepted(payload(created_at="1999-12-31T23:00:00+01:00")).intake.created_at == (
        dt.datetime(1999, 12, 31, 22, 0, tzinfo=dt.UTC)
    )


@pytest.mark.parametrize(
    ("created_at", "code"),
    [
        ("2026-03-19T12:00:01Z", "in_future"),
        ("2026-03-19T08:00:01-04:00", "in_future"),
        ("2026-03-19T10:00:00", "invalid_datetime"),
        ("2026-03-19", "invalid_datetime"),
        ("yesterday", "invalid_datetime"),
        ("1969-12-31T23:59:59Z", "out_of_range"),
        (1710849600, "invalid_type"),
    ],
)
def test_bad_created_at_is_rejected(created_at: object, code: str) -> None:
    """created_at must be an offset-carrying ISO-8601 instant, not in the future."""
    assert errors(payload(created_at=created_at)) == [("created_at", code)]


# --- idempotency key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "code"),
    [("", "blank"), ("k" * 201, "too_long"), ("a\nb", "control_characters"), (7, "invalid_type")],
)
def test_bad_idempotency_keys_are_rejected(key: object, code: str) -> None:
    """An idempotency key is a non-blank text of at most 200 characters."""
    assert errors(payload(idempotency_key=key)) == [("idempotency_key", code)]


# --- the payload as a whole -----------------------------------------------------------------


@pytest.mark.parametrize("data", [None, [], "a customer", 7, 1.5, True])
def test_a_payload_that_is_not_an_object_is_rejected(data: object) -> None:
    """Only a JSON object is a customer request."""
    assert errors(data) == [(None, "not_an_object")]


def test_unknown_keys_are_rejected_by_name() -> None:
    """Keys intake does not define are each reported."""
    assert errors(payload(email="a@b.example", Name="x")) == [
        ("email", "unknown_field"),
        ("Name", "unknown_field"),
    ]


def test_an_oversized_payload_is_rejected_before_anything_else() -> None:
    """A payload over the size limit is rejected without looking inside."""
    data = payload(custom_data={"tax_code": "x" * MAX_PAYLOAD_BYTES})
    assert errors(data) == [(None, "payload_too_large")]


def test_text_that_is_not_valid_unicode_is_rejected() -> None:
    """A lone surrogate (valid in JSON, not storable) is rejected, not crashed on."""
    assert errors(payload(name="Globex \ud800")) == [(None, "invalid_text")]


def test_non_json_values_are_rejected() -> None:
    """A direct caller passing Python objects that are not JSON gets a rejection."""
    assert errors(payload(name=object())) == [(None, "payload_too_large")]


def test_every_failure_is_reported_at_once() -> None:
    """All problems of a payload come back in one rejection."""
    data = {
        "reseller": "nobody",
        "name": "",
        "business_model": 5,
        "customer_class": "Business",
        "billing_period": "yearly",
        "billing_timezone": "Nowhere/City",
        "balance_control": "prepaid",
        "currency": "USD",
        "credit_limit": "5",
        "available_funds": "1.001",
        "custom_data": {"colour": "red"},
        "created_at": "2030-01-01T00:00:00Z",
        "extra": 1,
    }
    assert sorted(errors(data), key=str) == sorted(
        [
            ("extra", "unknown_field"),
            ("name", "blank"),
            ("business_model", "invalid_type"),
            ("billing_period", "unknown_billing_period"),
            ("billing_timezone", "unknown_timezone"),
            ("credit_limit", "not_allowed"),
            ("available_funds", "too_many_decimals"),
            ("created_at", "in_future"),
            ("reseller", "not_found"),
            ("custom_data.colour", "unknown_custom_field"),
            ("custom_data.tax_code", "missing_custom_field"),
        ],
        key=str,
    )


def test_required_keys_are_each_reported_when_missing() -> None:
    """An empty object names every required key."""
    assert errors({}) == [
        (key, "required")
        for key in (
            "reseller",
            "name",
            "business_model",
            "customer_class",
            "billing_period",
            "billing_timezone",
            "balance_control",
            "currency",
        )
    ]
