"""Catalog file parsing (models/catalog_file.py): YAML or JSON, every problem at once."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from models.catalog_file import CatalogFileError, parse_catalog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"


def problems(text: str, filename: str = "catalog.yaml") -> list[tuple[str | None, str]]:
    with pytest.raises(CatalogFileError) as caught:
        parse_catalog(text, filename=filename)
    return [(p.field, p.code) for p in caught.value.problems]


def test_the_example_catalog_is_valid() -> None:
    """The shipped example parses: two resellers, two business models, three classes."""
    catalog = parse_catalog(EXAMPLE.read_text())

    assert [r.name for r in catalog.resellers] == ["acme", "northwind"]
    assert [b.name for b in catalog.business_models] == ["Hosted IP PBX", "Internet access"]
    business = catalog.customer_classes[0]
    assert business.tax_rate == Decimal("0.20")
    assert business.custom_fields_json()[0] == {
        "name": "tax_code",
        "type": "string",
        "mandatory": True,
    }


def test_json_catalogs_are_read_as_json() -> None:
    """A .json file is parsed as JSON, with the same rules."""
    text = json.dumps({"customer_classes": [{"name": "Retail", "tax_rate": "0.08875"}]})
    catalog = parse_catalog(text, filename="catalog.json")

    assert catalog.customer_classes[0].tax_rate == Decimal("0.08875")
    assert catalog.customer_classes[0].invoice_template == "default.html"


def test_a_plain_number_tax_rate_keeps_the_digits_written() -> None:
    """tax_rate: 0.1 in YAML is exactly 0.1, not the binary float next to it."""
    catalog = parse_catalog("customer_classes: [{name: X, tax_rate: 0.1}]")

    assert catalog.customer_classes[0].tax_rate == Decimal("0.1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2]", [(None, "not_an_object")]),
        ("resellers: [", [(None, "syntax_error")]),
        ("resellers: [{display_name: A}]", [("resellers[0].name", "required")]),
        ("resellers: [{name: ''}]", [("resellers[0].name", "blank")]),
        ("resellers: [{name: ' a'}]", [("resellers[0].name", "untrimmed")]),
        ("resellers: [{name: a, colour: red}]", [("resellers[0].colour", "unknown_field")]),
        ("resellers: [{name: 5}]", [("resellers[0].name", "invalid_type")]),
        ("products: []", [("products", "unknown_field")]),
        ("business_models: [{name: PBX}]", [("business_models[0].service_type", "required")]),
        (
            "customer_classes: [{name: X, tax_rate: '1.5'}]",
            [("customer_classes[0].tax_rate", "out_of_range")],
        ),
        (
            "customer_classes: [{name: X, tax_rate: '-0.1'}]",
            [("customer_classes[0].tax_rate", "out_of_range")],
        ),
        (
            "customer_classes: [{name: X, tax_rate: '0.1234567'}]",
            [("customer_classes[0].tax_rate", "too_many_decimals")],
        ),
        (
            "customer_classes: [{name: X, tax_rate: twenty}]",
            [("customer_classes[0].tax_rate", "invalid_decimal")],
        ),
        (
            "customer_classes: [{name: X, grace_period_days: -1}]",
            [("customer_classes[0].grace_period_days", "out_of_range")],
        ),
        (
            "customer_classes: [{name: X, invoice_template: ../../etc/passwd}]",
            [("customer_classes[0].invoice_template", "invalid_value")],
        ),
        (
            "customer_classes: [{name: X, notification_emails: [billing]}]",
            [("customer_classes[0].notification_emails[0]", "invalid_value")],
        ),
        (
            "customer_classes: [{name: X, custom_fields: [{name: vat, type: money}]}]",
            [("customer_classes[0].custom_fields[0].type", "invalid_choice")],
        ),
        (
            "customer_classes: [{name: X, custom_fields: [{name: 'tax code', type: string}]}]",
            [("customer_classes[0].custom_fields[0].name", "invalid_value")],
        ),
        (
            "customer_classes: [{name: X, custom_fields: [{name: a, type: string, mandatory: 2}]}]",
            [("customer_classes[0].custom_fields[0].mandatory", "invalid_type")],
        ),
    ],
)
def test_invalid_catalogs_are_rejected_with_the_offending_path(
    text: str, expected: list[tuple[str | None, str]]
) -> None:
    """Each rule of the catalog format reports the path of the entry that breaks it."""
    assert problems(text) == expected


def test_duplicate_names_are_rejected() -> None:
    """A name may appear once per section, a custom field once per class."""
    text = """
resellers: [{name: acme}, {name: acme}]
customer_classes:
  - name: X
    custom_fields: [{name: a, type: string}, {name: a, type: integer}]
"""
    assert problems(text) == [
        ("resellers[1].name", "duplicate"),
        ("customer_classes[0].custom_fields[1].name", "duplicate"),
    ]


def test_every_problem_is_reported_at_once() -> None:
    """Several broken entries are all reported in one error."""
    text = """
resellers: [{name: ''}]
business_models: [{name: PBX}]
customer_classes: [{name: X, tax_rate: '2'}]
"""
    assert problems(text) == [
        ("resellers[0].name", "blank"),
        ("business_models[0].service_type", "required"),
        ("customer_classes[0].tax_rate", "out_of_range"),
    ]


def test_an_empty_catalog_is_valid() -> None:
    """Every section is optional."""
    catalog = parse_catalog("{}")
    assert (catalog.resellers, catalog.business_models, catalog.customer_classes) == ([], [], [])


def test_seller_details_and_document_settings_are_checked_by_their_libraries() -> None:
    """Country codes (pycountry), VAT numbers (python-stdnum), IBAN, BIC, e-mail and locale
    are refused with their own codes; valid ones are normalised."""
    from models.catalog_file import CatalogFileError, validate_catalog

    good = validate_catalog(
        {
            "resellers": [
                {
                    "name": "acme",
                    "address": {"lines": ["12 rue de la Paix"], "city": "Paris", "country": "fr"},
                    "tax_id": "FR 40 303 265 045",
                    "iban": "FR76 3000 6000 0112 3456 7890 189",
                    "bic": "AGRIFRPP",
                    "locale": "fr-fr",
                }
            ],
            "customer_classes": [
                {"name": "B2B", "einvoice_format": "factur-x", "requires": ["tax_id"]}
            ],
        }
    )
    row = good.resellers[0].party_row()
    assert row["address"]["country"] == "FR"
    assert (row["tax_id"], row["iban"], row["locale"]) == (
        "FR40303265045",
        "FR7630006000011234567890189",
        "fr_FR",
    )
    with pytest.raises(CatalogFileError) as refused:
        validate_catalog(
            {
                "resellers": [
                    {
                        "name": "acme",
                        "address": {"country": "XX"},
                        "tax_id": "FR40303265046",
                        "iban": "FR7630006000011234567890188",
                        "email": "not-an-address",
                        "locale": "xx_YY",
                    }
                ],
                "customer_classes": [{"name": "B2B", "einvoice_format": "pdf"}],
            }
        )
    codes = {e["field"]: e["code"] for e in refused.value.errors}
    assert codes["resellers[0].address"] == "invalid_country"
    assert codes["resellers[0].tax_id"] == "invalid_tax_id"
    assert codes["resellers[0].iban"] == "invalid_iban"
    assert codes["resellers[0].email"] == "invalid_email"
    assert codes["resellers[0].locale"] == "invalid_locale"
    assert "customer_classes[0].einvoice_format" in codes


def test_a_class_collection_policy_is_optional_and_checked() -> None:
    """The example's Business class has a policy, Wholesale the do-nothing default; bad
    days are reported at their path."""
    catalog = parse_catalog(EXAMPLE.read_text())
    business, _residential, wholesale = catalog.customer_classes
    assert business.collection.reminder_days == [7, 1]
    assert (business.collection.suspend_after_days, business.collection.terminate_after_days) == (
        10,
        60,
    )
    assert wholesale.collection.reminder_days == []
    assert wholesale.collection.suspend_after_days is None

    bad = (
        "customer_classes:\n"
        "  - name: A\n"
        "    collection: {reminder_days: [-1], suspend_after_days: 5}\n"
        "  - name: B\n"
        "    collection: {suspend_after_days: 10, terminate_after_days: 3}\n"
        "  - name: C\n"
        "    collection: {remind: [1]}\n"
    )
    assert problems(bad) == [
        ("customer_classes[0].collection.reminder_days[0]", "out_of_range"),
        ("customer_classes[1].collection", "out_of_order"),
        ("customer_classes[2].collection.remind", "unknown_field"),
    ]
