"""The customer's invoice details at intake: billing address, tax id, invoice e-mail, locale."""

from __future__ import annotations

import datetime as dt

import pytest

from models.intake import Accepted, CatalogRefs, Rejected, finish_intake, parse_intake
from tests.factories import DROP, intake_payload

NOW = dt.datetime(2026, 3, 19, 12, 0, tzinfo=dt.UTC)


def outcome(requires: tuple[str, ...] = (), **fields: object) -> Accepted | Rejected:
    draft = parse_intake(intake_payload(custom_data=DROP, **fields), now=NOW)
    return finish_intake(draft, CatalogRefs(1, 2, 3, requires=requires))


def test_the_details_are_optional_and_stored_normalised() -> None:
    """A French customer's address, VAT number, invoice address and locale come out normalised."""
    result = outcome(
        billing_address={
            "lines": ["3 avenue Foch"],
            "postal_code": "69006",
            "city": "Lyon",
            "country": "fr",
        },
        tax_id="FR 23 334 175 221",
        invoice_email="Factures@Emile.example",
        locale="fr-fr",
    )

    assert isinstance(result, Accepted), result
    intake = result.intake
    assert intake.billing_address == {
        "lines": ["3 avenue Foch"],
        "city": "Lyon",
        "postal_code": "69006",
        "region": "",
        "country": "FR",
    }
    assert (intake.tax_id, intake.locale) == ("FR23334175221", "fr_FR")
    assert intake.invoice_email == "Factures@emile.example"  # the domain is case-insensitive
    assert isinstance(outcome(), Accepted)


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        (
            {"billing_address": {"city": "Lyon", "country": "XX"}},
            "billing_address",
            "invalid_country",
        ),
        ({"billing_address": {"city": "Lyon"}}, "billing_address", "invalid_address"),
        ({"billing_address": "3 avenue Foch"}, "billing_address", "invalid_type"),
        ({"tax_id": "FR23334175222"}, "tax_id", "invalid_tax_id"),  # check digits
        ({"tax_id": "123", "billing_address": {"country": "DE"}}, "tax_id", "invalid_tax_id"),
        ({"invoice_email": "factures@"}, "invoice_email", "invalid_email"),
        ({"locale": "xx_YY"}, "locale", "invalid_locale"),
    ],
)
def test_bad_details_are_refused_with_their_own_code(fields, field, code) -> None:
    """Country (pycountry), VAT number (python-stdnum, for the address's country too), e-mail
    (email-validator) and locale (Babel) each refuse with a structured error."""
    result = outcome(**fields)

    assert isinstance(result, Rejected)
    assert (field, code) in [(e["field"], e["code"]) for e in result.errors]


def test_a_class_can_require_details() -> None:
    """Each detail the class requires and the request lacks is one `required` error."""
    result = outcome(requires=("billing_address", "tax_id"), invoice_email="ap@x.example")

    assert isinstance(result, Rejected)
    assert [(e["field"], e["code"]) for e in result.errors] == [
        ("billing_address", "required"),
        ("tax_id", "required"),
    ]
    given = outcome(requires=("tax_id",), tax_id="DE136695976", billing_address={"country": "DE"})
    assert isinstance(given, Accepted)
