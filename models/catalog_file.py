"""The catalog file: resellers with their business models and customer classes, YAML or JSON.

Pure parsing and validation, no I/O: `parse_catalog(text)` returns a `CatalogFile` or raises
`CatalogFileError` carrying every problem at once, each `{"field", "code", "message"}` with
`field` a path such as `resellers[0].customer_classes[1].tax_rate`.

    resellers:
      - name: acme                    # how intake payloads refer to it (unique, any case)
        display_name: ACME Telecom    # optional
        legal_name: ACME Telecom SAS  # the seller on invoices; optional, as are all below
        address: {lines: [12 rue de la Paix], postal_code: "75002", city: Paris, country: FR}
        tax_id: FR40303265045         # VAT number: checked by python-stdnum where it knows it
        email: billing@acme.example
        payment_text: SEPA transfer within 15 days
        iban: FR7630006000011234567890189
        bic: AGRIFRPP
        locale: fr_FR                 # documents' locale unless class or customer say
        business_models:              # this reseller's own
          - name: Hosted IP PBX       # unique within the reseller
            service_type: voice
            description: Cloud PBX seats  # optional
        plans:                        # this reseller's own (see models.catalog_plans)
          - {name: PBX seat, business_model: Hosted IP PBX, billing_mode: advance,
             fees: {USD: "12.00"}}
        customer_classes:             # this reseller's own
          - name: Business            # unique within the reseller
            grace_period_days: 15     # optional, default 0
            invoice_template: default.html
            tax_name: VAT             # optional, default "Tax"
            tax_rate: "0.20"          # a fraction: 0.20 is 20 %; optional, default 0
            notification_emails: [billing@acme.example]
            custom_fields:
              - {name: tax_code, type: string, mandatory: true}
            requires: [billing_address, tax_id]   # customer details intake must have
            einvoice_format: factur-x  # none (default) or factur-x (EN 16931 in a PDF/A-3)
            locale: de_DE             # optional: its customers' documents' locale
            collection:               # optional; each field optional, defaults do nothing
              reminder_days: [7, 1]   # reminders that many days before the due date
              overdue_notice: true    # a notice when the invoice becomes overdue
              suspend_after_days: 10  # block (reason overdue) this many days overdue
              terminate_after_days: 60  # terminate the customer this many days overdue

Business models and customer classes belong to their reseller: two resellers may each have
a class "Business" with its own tax and notification list, and neither sees the other's.
Names are unique ignoring case and Unicode form (`models.names.name_key`). The older flat
file (top-level `business_models` / `customer_classes`) is refused with a message saying how
to nest it. `tax_rate` is best written as a string; a plain YAML/JSON number is accepted and
read as the digits it was written with (0.2 is "0.2", never a binary float). Custom field
types are `models.custom_fields.CUSTOM_FIELD_TYPES`. `check_templates` refuses classes naming an
invoice template that does not exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from models.catalog_plans import PlanSpec, duplicate_plans
from models.custom_fields import CUSTOM_FIELD_TYPES, CustomField
from models.invoice_view import Address
from models.money import parse_decimal_text
from models.names import name_key
from models.parties import (
    PartyError,
    check_address,
    check_bic,
    check_email,
    check_iban,
    check_locale,
    check_tax_id,
)
from models.validation import Problem, has_control_characters, is_email, problems_from

MAX_CATALOG_BYTES: Final = 4 * 1024 * 1024
TAX_RATE_PLACES: Final = 6  # models.base.Rate()
_TEMPLATE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.html", re.ASCII)
_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


class CatalogFileError(ValueError):
    """The catalog file is not valid; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p.field or '(file)'}: {p.message}" for p in problems)
        super().__init__(f"the catalog is not valid:\n{lines}")

    @property
    def errors(self) -> list[dict[str, str | None]]:
        return [p.as_dict() for p in self.problems]


def _name(raw: str) -> str:
    if not raw.strip():
        raise PydanticCustomError("blank", "must not be empty")
    if raw != raw.strip():
        raise PydanticCustomError("untrimmed", "must not start or end with spaces")
    if has_control_characters(raw):
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return raw


def _tax_rate(raw: Any) -> Decimal:
    if isinstance(raw, Decimal):
        raw = str(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise PydanticCustomError("invalid_type", 'must be a fraction such as "0.20"')
    # repr() of a float is the shortest text that reads back as it: the digits written.
    rate = parse_decimal_text(repr(raw) if isinstance(raw, float) else raw)
    if rate is None:
        raise PydanticCustomError("invalid_decimal", 'must be a fraction such as "0.20"')
    if rate < 0 or rate > 1:
        raise PydanticCustomError("out_of_range", "must be between 0 and 1 (0.20 is 20 %)")
    if rate != rate.quantize(Decimal(1).scaleb(-TAX_RATE_PLACES)):
        raise PydanticCustomError(
            "too_many_decimals", f"must have at most {TAX_RATE_PLACES} decimal places"
        )
    return rate


def _template(raw: str) -> str:
    if not _TEMPLATE_NAME.fullmatch(raw) or ".." in raw:
        raise PydanticCustomError(
            "invalid_value", "must be a template file name such as 'default.html' (no folders)"
        )
    return raw


def _email(raw: str) -> str:
    if not is_email(raw):
        raise PydanticCustomError("invalid_value", f"{raw!r} is not an e-mail address")
    return raw


def _field_type(raw: str) -> str:
    if raw not in CUSTOM_FIELD_TYPES:
        raise PydanticCustomError(
            "invalid_choice",
            f"{raw!r} is not a field type; use one of {', '.join(CUSTOM_FIELD_TYPES)}",
        )
    return raw


def _field_name(raw: str) -> str:
    if not _FIELD_NAME.fullmatch(raw):
        raise PydanticCustomError(
            "invalid_value",
            "must be an identifier: letters, digits and '_', not starting with a digit",
        )
    return raw


Name = Annotated[str, Field(max_length=100), AfterValidator(_name)]


def _party(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A `models.parties` check as a pydantic validator, keeping its code and message."""

    def validate(raw: Any) -> Any:
        try:
            return check(raw)
        except PartyError as error:
            raise PydanticCustomError(error.code, error.message) from None

    return validate


OptionalText = Annotated[str, Field(max_length=200)]
Locale = Annotated[str, AfterValidator(_party(check_locale))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BusinessModelSpec(_Strict):
    name: Name
    service_type: Annotated[str, Field(max_length=50), AfterValidator(_name)]
    description: Annotated[str, Field(max_length=10_000)] = ""


class CustomFieldSpec(_Strict):
    name: Annotated[str, Field(max_length=64), AfterValidator(_field_name)]
    type: Annotated[str, AfterValidator(_field_type)]
    mandatory: bool = False

    def as_custom_field(self) -> CustomField:
        return CustomField(self.name, self.type, self.mandatory)


class CollectionSpec(_Strict):
    """The class's collection policy (models.collections_rules.CollectionPolicy)."""

    reminder_days: Annotated[list[Annotated[int, Field(ge=0, le=365)]], Field(max_length=10)] = []
    overdue_notice: bool = False
    suspend_after_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    terminate_after_days: Annotated[int, Field(ge=0, le=3650)] | None = None

    @model_validator(mode="after")
    def _in_order(self) -> CollectionSpec:
        if len(set(self.reminder_days)) != len(self.reminder_days):
            raise PydanticCustomError("duplicate", "reminder_days lists a day twice")
        if (
            self.suspend_after_days is not None
            and self.terminate_after_days is not None
            and self.terminate_after_days < self.suspend_after_days
        ):
            raise PydanticCustomError(
                "out_of_order", "terminate_after_days must not come before suspend_after_days"
            )
        return self


class CustomerClassSpec(_Strict):
    name: Name
    grace_period_days: Annotated[int, Field(ge=0, le=3650)] = 0
    invoice_template: Annotated[str, Field(max_length=100), AfterValidator(_template)] = (
        "default.html"
    )
    tax_name: Annotated[str, Field(max_length=50), AfterValidator(_name)] = "Tax"
    tax_rate: Annotated[Decimal, BeforeValidator(_tax_rate)] = Decimal(0)
    notification_emails: Annotated[
        list[Annotated[str, Field(max_length=320), AfterValidator(_email)]], Field(max_length=50)
    ] = []
    custom_fields: Annotated[list[CustomFieldSpec], Field(max_length=100)] = []
    requires: list[Literal["billing_address", "tax_id", "invoice_email"]] = []
    einvoice_format: Literal["none", "factur-x"] = "none"
    locale: Locale = ""
    collection: CollectionSpec = CollectionSpec()

    def custom_fields_json(self) -> list[dict[str, Any]]:
        return [f.as_custom_field().as_json() for f in self.custom_fields]


class ResellerSpec(_Strict):
    name: Name
    display_name: Annotated[str, Field(max_length=200), AfterValidator(_name)] | None = None
    # The seller on its invoices (all optional; legal_name defaults to display_name).
    legal_name: OptionalText = ""
    address: Annotated[dict[str, Any], AfterValidator(_party(check_address))] | None = None
    tax_id: Annotated[str, AfterValidator(_party(check_tax_id))] = ""
    email: Annotated[str, AfterValidator(_party(check_email))] = ""
    payment_text: Annotated[str, Field(max_length=1000)] = ""
    iban: Annotated[str, AfterValidator(_party(check_iban))] = ""
    bic: Annotated[str, AfterValidator(_party(check_bic))] = ""
    locale: Locale = ""
    business_models: Annotated[list[BusinessModelSpec], Field(max_length=1000)] = []
    customer_classes: Annotated[list[CustomerClassSpec], Field(max_length=1000)] = []
    plans: Annotated[list[PlanSpec], Field(max_length=1000)] = []

    def party_row(self) -> dict[str, Any]:
        address = self.address
        return {
            "legal_name": self.legal_name,
            "address": address.as_json() if isinstance(address, Address) else None,
            "tax_id": self.tax_id,
            "email": self.email,
            "payment_text": self.payment_text,
            "iban": self.iban,
            "bic": self.bic,
            "locale": self.locale,
        }


class CatalogFile(_Strict):
    resellers: list[ResellerSpec] = []


def _duplicate_names(section: str, entries: Collection[Any], what: str) -> list[Problem]:
    """Entries of one list whose names share a key (the database would keep only one)."""
    problems = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        key = name_key(entry.name)
        if key in seen:
            problems.append(
                Problem(
                    f"{section}[{i}].name",
                    "duplicate",
                    f"{what} {entry.name!r} is already defined at {section}[{seen[key]}] "
                    "(names are unique ignoring case)",
                )
            )
        seen.setdefault(key, i)
    return problems


def _duplicates(catalog: CatalogFile) -> list[Problem]:
    problems = _duplicate_names("resellers", catalog.resellers, "reseller")
    for r, reseller in enumerate(catalog.resellers):
        where = f"resellers[{r}]"
        problems += _duplicate_names(
            f"{where}.business_models", reseller.business_models, "business model"
        )
        problems += _duplicate_names(
            f"{where}.customer_classes", reseller.customer_classes, "customer class"
        )
        problems += duplicate_plans(f"{where}.plans", reseller.plans)
        for i, cls in enumerate(reseller.customer_classes):
            fields: set[str] = set()
            for j, custom in enumerate(cls.custom_fields):
                if custom.name in fields:
                    problems.append(
                        Problem(
                            f"{where}.customer_classes[{i}].custom_fields[{j}].name",
                            "duplicate",
                            f"custom field {custom.name!r} is defined twice in class {cls.name!r}",
                        )
                    )
                fields.add(custom.name)
    return problems


def _flat_sections(data: dict[Any, Any]) -> list[Problem]:
    """The older flat file: catalog lists at the top level, shared by every reseller."""
    return [
        Problem(
            section,
            "not_nested",
            f"{section} now belong to a reseller: move this list under each reseller that "
            f"uses it, as `resellers: [{{name: acme, {section}: [...]}}]` "
            "(see examples/catalog.yaml)",
        )
        for section in ("business_models", "customer_classes")
        if section in data
    ]


def check_templates(catalog: CatalogFile, available: Collection[str]) -> None:
    """Raise CatalogFileError if a class names an invoice template that does not exist."""
    problems = [
        Problem(
            f"resellers[{r}].customer_classes[{i}].invoice_template",
            "unknown_template",
            f"there is no invoice template {cls.invoice_template!r} "
            f"(available: {', '.join(sorted(available)) or 'none'})",
        )
        for r, reseller in enumerate(catalog.resellers)
        for i, cls in enumerate(reseller.customer_classes)
        if cls.invoice_template not in available
    ]
    if problems:
        raise CatalogFileError(problems)


def validate_catalog(data: object) -> CatalogFile:
    """A `CatalogFile` from decoded YAML/JSON data; CatalogFileError lists every problem."""
    if not isinstance(data, dict):
        raise CatalogFileError(
            [
                Problem(
                    None,
                    "not_an_object",
                    "the catalog must be a mapping with a list of resellers",
                )
            ]
        )
    flat = _flat_sections(data)
    if flat:
        raise CatalogFileError(flat)
    try:
        catalog = CatalogFile.model_validate(data)
    except ValidationError as error:
        raise CatalogFileError(problems_from(error)) from None
    duplicates = _duplicates(catalog)
    if duplicates:
        raise CatalogFileError(duplicates)
    return catalog


def parse_catalog(text: str, *, filename: str = "") -> CatalogFile:
    """Parse YAML or JSON text (JSON if the name ends in .json, else YAML, which reads both)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_CATALOG_BYTES:
        raise CatalogFileError(
            [Problem(None, "too_large", f"catalog files are at most {MAX_CATALOG_BYTES} bytes")]
        )
    try:
        data = json.loads(text) if filename.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise CatalogFileError(
            [Problem(None, "syntax_error", f"not valid {_format(filename)}: {error}")]
        ) from None
    return validate_catalog(data)


def _format(filename: str) -> str:
    return "JSON" if filename.endswith(".json") else "YAML"
