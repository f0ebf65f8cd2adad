"""Customer intake validation: pure rules, no I/O, every failure reported at once.

An intake payload is one JSON object (see `CustomerIntake` for its keys). Validation runs
in two steps so that the only database access, looking the catalog names up, happens in
the service between them:

    draft = parse_intake(payload, now=now)        # shape, types and rules of each key
    refs = <look up draft.catalog_names() in the database>
    outcome = finish_intake(draft, refs)          # catalog rules, custom data

`validate_intake(payload, catalog, now=now)` does both against an in-memory `Catalog`.
The outcome is `Accepted(intake)` or `Rejected(errors)`; nothing here raises on bad input.
Each error is `{"field": ..., "code": ..., "message": ...}`: `field` names the offending key
(`custom_data.tax_code` for a custom field, `null` for the payload as a whole), `message` is
for a person, `code` is for programs and stays stable.

Error codes:

| code | meaning |
| --- | --- |
| `not_an_object` | the payload is not a JSON object |
| `payload_too_large` | the payload is bigger than `MAX_PAYLOAD_BYTES` (or absurdly nested) |
| `invalid_text` | the payload holds text that is not valid Unicode (lone surrogates) |
| `unknown_field` | a key that intake does not define |
| `required` | a required key is missing (or null) |
| `invalid_type` | the JSON type is wrong (e.g. a number where a string is expected) |
| `blank` | a text is empty after trimming |
| `too_long` | a text is longer than allowed |
| `control_characters` | a text contains control characters or line separators |
| `name_taken` | another customer of the same reseller has this name, ignoring case (service) |
| `not_found` | no such reseller, or no such business model / class of the reseller |
| `unknown_billing_period` | not one of the six billing-period rules |
| `unknown_timezone` | not an exact IANA timezone name |
| `invalid_choice` | `balance_control` is neither `prepaid` nor `postpaid` |
| `unknown_currency` | not a billable ISO 4217 currency code |
| `invalid_decimal` | an amount is not a plain decimal number such as `"12.50"` |
| `negative` | an amount is below zero |
| `too_large` | an amount or number is too large to store |
| `too_many_decimals` | an amount has more decimals than its currency allows |
| `not_allowed` | `credit_limit` on a prepaid or `available_funds` on a postpaid customer |
| `missing_custom_field` | a mandatory custom field of the customer class is absent |
| `unknown_custom_field` | a custom field the customer class does not define |
| `invalid_value` | a custom field value is not a valid date, e-mail, integer, … |
| `invalid_datetime` | `created_at` is not an ISO-8601 instant with a UTC offset |
| `in_future` | `created_at` is later than now |
| `out_of_range` | `created_at` is before `EARLIEST_CREATED_AT` |
| `wrong_business_model` | `subscriptions[i].plan` is a plan of another business model |
| `currency_not_offered` | `subscriptions[i].plan` has no fee in the customer's currency |
| `duplicate` | a plan given twice in `subscriptions` (`not_found`, `out_of_range` apply too) |
| `idempotency_key_reused` | the reseller used the key for a customer with another name (service) |

Money rules: `credit_limit` (postpaid only; absent means no limit) and `available_funds`
(prepaid only; absent means zero, and a prepaid customer with zero funds starts blocked)
are non-negative decimal strings (or JSON integers), never floats.

Custom data: each value must have its field's type (see `models/custom_fields.py`).
The codes shared by every payload are described in `models/validation.py`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError

from models.custom_fields import CUSTOM_FIELD_TYPES, CustomField, check_custom_data
from models.customer import BalanceControl
from models.invoice_view import Address
from models.money import (
    MoneyError,
    decimal_places,
    is_currency,
    minor_units,
    parse_decimal,
    parse_decimal_text,
)
from models.names import name_key
from models.parties import PartyError, check_address, check_email, check_locale, check_tax_id
from models.periods import (
    BillingPeriod,
    InvalidTimezone,
    UnknownBillingPeriod,
    parse_rule,
    validate_timezone,
)
from models.subscription_requests import (
    PlanRef,
    SubscriptionRequest,
    check_plans,
    parse_subscriptions,
)
from models.validation import (
    Problem,
    check_instant,
    has_control_characters,
    is_email,
    parse_instant,
    problems_from,
)
from models.validation import refusal as _fail

# Names that moved to models/validation.py, models/money.py and models/custom_fields.py,
# re-exported for code written before the split; import them from their own module.
__all__ = [
    "CUSTOM_FIELD_TYPES",
    "CustomField",
    "Problem",
    "check_custom_data",
    "has_control_characters",
    "is_email",
    "parse_decimal_text",
    "parse_instant",
]

MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_NAME_LENGTH: Final = 100
MAX_CATALOG_NAME_LENGTH: Final = 100
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 200
# Imports of existing customers may not predate this; the period engine and the closer's
# catch-up are not meant to replay more than half a century of periods.
EARLIEST_CREATED_AT: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

BILLING_PERIODS: Final = tuple(rule.value for rule in BillingPeriod)


# --------------------------------------------------------------------------------------------
# Text rules


def _check_customer_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise _fail("blank", "name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise _fail(
            "too_long", f"name is {len(name)} characters long; at most {MAX_NAME_LENGTH} allowed"
        )
    if has_control_characters(name):
        raise _fail("control_characters", "name must not contain control characters")
    return name


def _check_catalog_name(raw: str) -> str:
    if not raw.strip():
        raise _fail("blank", "must name an entry of the catalog")
    if len(raw) > MAX_CATALOG_NAME_LENGTH:
        raise _fail("too_long", f"catalog names are at most {MAX_CATALOG_NAME_LENGTH} characters")
    if has_control_characters(raw):
        raise _fail("control_characters", "must not contain control characters")
    return raw


def _check_idempotency_key(raw: str) -> str:
    if not raw.strip():
        raise _fail("blank", "idempotency_key must not be empty (leave it out instead)")
    if len(raw) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise _fail(
            "too_long", f"idempotency_key is at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    if has_control_characters(raw):
        raise _fail("control_characters", "idempotency_key must not contain control characters")
    return raw


# --------------------------------------------------------------------------------------------
# Billing rule, timezone, balance control, currency


def _check_timezone(raw: str) -> str:
    try:
        return validate_timezone(raw)
    except InvalidTimezone:
        raise _fail(
            "unknown_timezone",
            f"{raw!r} is not an IANA timezone name; use one such as 'America/New_York' "
            "or 'Europe/Madrid' (exact spelling, case-sensitive)",
        ) from None


def _check_billing_period(raw: str) -> str:
    try:
        return parse_rule(raw).value
    except UnknownBillingPeriod:
        raise _fail(
            "unknown_billing_period",
            f"{raw!r} is not a billing period; use one of {', '.join(BILLING_PERIODS)}",
        ) from None


def _check_balance_control(raw: str) -> BalanceControl:
    try:
        return BalanceControl(raw)
    except ValueError:
        raise _fail("invalid_choice", f"{raw!r} is neither 'prepaid' nor 'postpaid'") from None


def _check_currency(raw: str) -> str:
    if not is_currency(raw):
        raise _fail(
            "unknown_currency",
            f"{raw!r} is not an ISO 4217 currency code; use one such as 'USD' or 'EUR' "
            "(upper case)",
        )
    return raw


# --------------------------------------------------------------------------------------------
# Amounts


def _check_amount(raw: str | int) -> Decimal:
    try:
        amount = parse_decimal(raw)
    except MoneyError as error:
        raise _fail(error.code, str(error)) from None
    if amount < 0:
        raise _fail("negative", f"{raw!r} is negative; amounts must be zero or more")
    return amount


# --------------------------------------------------------------------------------------------
# created_at


def _check_created_at(raw: str) -> dt.datetime:
    value = check_instant(raw, name="created_at")
    if value < EARLIEST_CREATED_AT:
        raise _fail(
            "out_of_range", f"created_at must not be before {EARLIEST_CREATED_AT.isoformat()}"
        )
    return value


# --------------------------------------------------------------------------------------------
# The payload


CustomerName = Annotated[str, AfterValidator(_check_customer_name)]
CatalogName = Annotated[str, AfterValidator(_check_catalog_name)]
BillingPeriodName = Annotated[str, AfterValidator(_check_billing_period)]
TimezoneName = Annotated[str, AfterValidator(_check_timezone)]
BalanceControlName = Annotated[str, AfterValidator(_check_balance_control)]
CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
AmountInput = Annotated[str | int, AfterValidator(_check_amount)]
IdempotencyKey = Annotated[str, AfterValidator(_check_idempotency_key)]
InstantInput = Annotated[str, AfterValidator(_check_created_at)]
CustomDataInput = dict[str, Any]


def _party_check(check: Any) -> Any:
    """A `models.parties` check as a validator that keeps its code and message."""

    def validate(raw: Any) -> Any:
        try:
            value = check(raw)
        except PartyError as error:
            raise _fail(error.code, error.message) from None
        return value.as_json() if isinstance(value, Address) else value

    return validate


AddressInput = Annotated[dict[str, Any], AfterValidator(_party_check(check_address))]
TaxIdInput = Annotated[str, AfterValidator(_party_check(check_tax_id))]
EmailInput = Annotated[str, AfterValidator(_party_check(check_email))]
LocaleInput = Annotated[str, AfterValidator(_party_check(check_locale))]
# The buyer's details a customer class can require (`customer_classes.requires`).
CUSTOMER_DETAILS: Final = ("billing_address", "tax_id", "invoice_email")


class CustomerIntake(BaseModel):
    """A validated customer-creation request, ready to store.

    `name` is trimmed; `custom_data` holds normalised values of the class's fields;
    `created_at` is None when the request did not give one (the service then uses `now`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    reseller: str
    name: str
    business_model: str
    customer_class: str
    billing_period: str
    billing_timezone: str
    balance_control: BalanceControl
    currency: str
    credit_limit: Decimal | None = None
    available_funds: Decimal | None = None
    custom_data: dict[str, Any] = {}
    idempotency_key: str | None = None
    created_at: dt.datetime | None = None
    billing_address: dict[str, Any] | None = None
    tax_id: str | None = None
    invoice_email: str | None = None
    locale: str | None = None


def _strict(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind, config=ConfigDict(strict=True))


@dataclass(frozen=True)
class _Key:
    adapter: TypeAdapter[Any]
    required: bool
    expected: str  # for `invalid_type` messages: "a string", …


_KEYS: Final[dict[str, _Key]] = {
    "reseller": _Key(_strict(CatalogName), True, "a string (a reseller's name)"),
    "name": _Key(_strict(CustomerName), True, "a string"),
    "business_model": _Key(_strict(CatalogName), True, "a string (a business model's name)"),
    "customer_class": _Key(_strict(CatalogName), True, "a string (a customer class's name)"),
    "billing_period": _Key(_strict(BillingPeriodName), True, "a string such as 'monthly'"),
    "billing_timezone": _Key(_strict(TimezoneName), True, "a string such as 'Europe/Paris'"),
    "balance_control": _Key(_strict(BalanceControlName), True, "'prepaid' or 'postpaid'"),
    "currency": _Key(_strict(CurrencyCode), True, "a string such as 'USD'"),
    "credit_limit": _Key(_strict(AmountInput), False, 'a decimal string such as "500.00"'),
    "available_funds": _Key(_strict(AmountInput), False, 'a decimal string such as "100.00"'),
    "custom_data": _Key(_strict(CustomDataInput), False, "an object"),
    "subscriptions": _Key(_strict(list[Any]), False, 'a list such as [{"plan": …, "quantity": 1}]'),
    "idempotency_key": _Key(_strict(IdempotencyKey), False, "a string"),
    "created_at": _Key(_strict(InstantInput), False, "an ISO-8601 instant string"),
    "billing_address": _Key(
        _strict(AddressInput), False, "an object {lines, postal_code, city, region, country}"
    ),
    "tax_id": _Key(_strict(TaxIdInput), False, "a string (a VAT number or other tax id)"),
    "invoice_email": _Key(_strict(EmailInput), False, "a string (an e-mail address)"),
    "locale": _Key(_strict(LocaleInput), False, "a string such as 'fr_FR'"),
}

ACCEPTED_KEYS: Final = tuple(_KEYS)


def _payload_size_problem(payload: Mapping[str, Any]) -> Problem | None:
    try:
        encoded = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return Problem(None, "invalid_text", "the payload holds text that is not valid Unicode")
    except (ValueError, TypeError, RecursionError):
        # Non-JSON values, NaN/infinity, or integers too long to print: not a payload anyone
        # should send; reported as too large rather than guessed at.
        return Problem(
            None, "payload_too_large", "the payload is not plain JSON of a reasonable size"
        )
    if len(encoded) > MAX_PAYLOAD_BYTES:
        return Problem(
            None,
            "payload_too_large",
            f"the payload is {len(encoded)} bytes; at most {MAX_PAYLOAD_BYTES} are accepted",
        )
    return None


@dataclass
class IntakeDraft:
    """The outcome of the first step: the keys that passed, and every problem so far."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    shaped: bool = True  # False when the payload is not even an object of sensible size
    subscriptions: list[SubscriptionRequest] = field(default_factory=list)

    def catalog_names(self) -> tuple[str | None, str | None, str | None]:
        """(reseller, business model, customer class) names that need looking up."""
        return (
            self.values.get("reseller"),
            self.values.get("business_model"),
            self.values.get("customer_class"),
        )


def parse_intake(payload: object, *, now: dt.datetime) -> IntakeDraft:
    """Check the payload's shape and each key's own rules; never raises on bad input."""
    draft = IntakeDraft()
    if not isinstance(payload, dict):
        draft.shaped = False
        draft.problems.append(
            Problem(None, "not_an_object", "the payload must be a JSON object of customer fields")
        )
        return draft
    size_problem = _payload_size_problem(payload)
    if size_problem is not None:
        draft.shaped = False
        draft.problems.append(size_problem)
        return draft

    for key in payload:
        if key not in _KEYS:
            draft.problems.append(
                Problem(
                    str(key),
                    "unknown_field",
                    f"{key!r} is not an intake field; accepted: {', '.join(ACCEPTED_KEYS)}",
                )
            )
    for name, spec in _KEYS.items():
        raw = payload.get(name)
        if raw is None:
            if spec.required:
                draft.problems.append(Problem(name, "required", f"{name} is required"))
            continue
        try:
            draft.values[name] = spec.adapter.validate_python(raw)
        except ValidationError as error:
            draft.problems.extend(problems_from(error, field=name, expected=spec.expected))

    _check_money_rules(draft)
    _check_tax_id_country(draft)
    if "subscriptions" in draft.values:
        requests, problems = parse_subscriptions(draft.values.pop("subscriptions"))
        draft.subscriptions = requests
        draft.problems.extend(problems)
    created_at = draft.values.get("created_at")
    if created_at is not None and created_at > now:
        draft.problems.append(
            Problem(
                "created_at",
                "in_future",
                f"created_at {created_at.isoformat()} is in the future (now is {now.isoformat()})",
            )
        )
        del draft.values["created_at"]
    return draft


def _check_tax_id_country(draft: IntakeDraft) -> None:
    """A tax id without an EU prefix is checked for the billing address's country."""
    values = draft.values
    tax_id, address = values.get("tax_id"), values.get("billing_address")
    if tax_id is None or address is None:
        return
    try:
        values["tax_id"] = check_tax_id(tax_id, address["country"])
    except PartyError as error:
        draft.problems.append(Problem("tax_id", error.code, error.message))
        del values["tax_id"]


def _check_money_rules(draft: IntakeDraft) -> None:
    values = draft.values
    control = values.get("balance_control")
    wrong_side = {"prepaid": "credit_limit", "postpaid": "available_funds"}.get(control or "")
    if wrong_side is not None and wrong_side in values:
        other = "available_funds" if wrong_side == "credit_limit" else "credit_limit"
        draft.problems.append(
            Problem(
                wrong_side,
                "not_allowed",
                f"{wrong_side} applies only to {'postpaid' if control == 'prepaid' else 'prepaid'}"
                f" customers; a {control} customer takes {other}",
            )
        )
        del values[wrong_side]
    currency = values.get("currency")
    if currency is None:
        return
    places = minor_units(currency)
    for name in ("credit_limit", "available_funds"):
        amount = values.get(name)
        if amount is not None and decimal_places(amount) > places:
            draft.problems.append(
                Problem(
                    name,
                    "too_many_decimals",
                    f"{currency} amounts have at most {places} decimal places; got {amount}",
                )
            )
            del values[name]


# --------------------------------------------------------------------------------------------
# The catalog step


@dataclass(frozen=True)
class CatalogRefs:
    """What the database knows about the names in a draft (None: no such entry)."""

    reseller_id: int | None
    business_model_id: int | None
    customer_class_id: int | None
    custom_fields: tuple[CustomField, ...] = ()
    requires: tuple[str, ...] = ()  # buyer details the class requires (CUSTOMER_DETAILS)
    plans: Mapping[str, PlanRef] = field(default_factory=dict)  # by name key


@dataclass(frozen=True)
class Accepted:
    intake: CustomerIntake
    reseller_id: int
    business_model_id: int
    customer_class_id: int
    subscriptions: tuple[tuple[PlanRef, int], ...] = ()  # plan and quantity


@dataclass(frozen=True)
class Rejected:
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> list[dict[str, str | None]]:
        return [p.as_dict() for p in self.problems]


def finish_intake(draft: IntakeDraft, refs: CatalogRefs | None) -> Accepted | Rejected:
    """Apply the catalog rules to a draft; `refs` is None only when the draft is shapeless."""
    problems = list(draft.problems)
    if not draft.shaped or refs is None:
        return Rejected(tuple(problems))
    values = dict(draft.values)
    reseller, business_model, customer_class = draft.catalog_names()
    for key, name, found in (
        ("reseller", reseller, refs.reseller_id),
        ("business_model", business_model, refs.business_model_id),
        ("customer_class", customer_class, refs.customer_class_id),
    ):
        if name is not None and found is None:
            if key != "reseller" and reseller is not None and refs.reseller_id is None:
                continue  # the catalog is the reseller's: unknown reseller, nothing to look in
            label = key.replace("_", " ")
            where = "" if key == "reseller" else f" for reseller {reseller!r}"
            problems.append(Problem(key, "not_found", f"there is no {label} named {name!r}{where}"))
    if customer_class is not None and refs.customer_class_id is not None:
        clean, custom_problems = check_custom_data(
            values.get("custom_data", {}), refs.custom_fields, class_name=customer_class
        )
        values["custom_data"] = clean
        problems.extend(custom_problems)
        for detail in refs.requires:
            if values.get(detail) is None and detail not in {p.field for p in problems}:
                problems.append(
                    Problem(detail, "required", f"class {customer_class!r} requires {detail}")
                )
    subscriptions: list[tuple[PlanRef, int]] = []
    if draft.subscriptions and refs.reseller_id is not None:
        subscriptions, plan_problems = check_plans(
            draft.subscriptions,
            refs.plans,
            business_model_id=refs.business_model_id,
            business_model=business_model,
            currency=values.get("currency"),
        )
        problems.extend(plan_problems)
    if problems:
        return Rejected(tuple(problems))
    assert refs.reseller_id is not None
    assert refs.business_model_id is not None
    assert refs.customer_class_id is not None
    if values["balance_control"] == BalanceControl.PREPAID:
        values.setdefault("available_funds", Decimal(0))
    return Accepted(
        intake=CustomerIntake.model_validate(values),
        reseller_id=refs.reseller_id,
        business_model_id=refs.business_model_id,
        customer_class_id=refs.customer_class_id,
        subscriptions=tuple(subscriptions),
    )


@dataclass(frozen=True)
class CatalogClass:
    id: int
    custom_fields: tuple[CustomField, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """An in-memory catalog: names to ids (and a class's custom fields)."""

    resellers: Mapping[str, int]
    business_models: Mapping[str, int]
    customer_classes: Mapping[str, CatalogClass]

    def refs(self, draft: IntakeDraft) -> CatalogRefs:
        reseller, business_model, customer_class = draft.catalog_names()
        cls = self.customer_classes.get(customer_class) if customer_class is not None else None
        return CatalogRefs(
            reseller_id=self.resellers.get(reseller) if reseller is not None else None,
            business_model_id=(
                self.business_models.get(business_model) if business_model is not None else None
            ),
            customer_class_id=cls.id if cls is not None else None,
            custom_fields=cls.custom_fields if cls is not None else (),
        )


def validate_intake(payload: object, catalog: Catalog, *, now: dt.datetime) -> Accepted | Rejected:
    """Both steps against an in-memory catalog."""
    draft = parse_intake(payload, now=now)
    return finish_intake(draft, catalog.refs(draft) if draft.shaped else None)


MAX_IMPORT_CHUNK: Final = 5000  # payloads in one bulk-import message


def claimed_identities(payload: object) -> tuple[tuple[str, str, str], ...]:
    """What a payload would make unique if stored: `(reseller key, "name", name key)` and
    `(reseller key, "key", idempotency key)`, from the raw values (none for a value of the
    wrong type). Two payloads that share one must be decided in file order; a bulk
    producer keeps them in one chunk or sends the later one after the earlier's outcome.
    A wrong reseller value counts as one shared reseller: over-grouping is harmless."""
    if not isinstance(payload, dict):
        return ()
    reseller = payload.get("reseller")
    tenant = name_key(reseller) if isinstance(reseller, str) else ""
    claims: list[tuple[str, str, str]] = []
    name = payload.get("name")
    if isinstance(name, str):
        claims.append((tenant, "name", name_key(name.strip())))
    key = payload.get("idempotency_key")
    if isinstance(key, str):
        claims.append((tenant, "key", key))
    return tuple(claims)
