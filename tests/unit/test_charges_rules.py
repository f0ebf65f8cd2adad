"""Pure balance rules: postpaid credit limit, prepaid available funds, blocking."""

from __future__ import annotations

from decimal import Decimal

from models.invoicing_rules import BalanceChange, Refusal, apply_charge, apply_payment

D = Decimal


def test_a_postpaid_charge_raises_what_is_owed() -> None:
    """Below the limit a charge is accepted and adds to the balance owed."""
    change = apply_charge("postpaid", D("10.00"), D("100.00"), D("25.50"))

    assert change == BalanceChange(delta=D("25.50"), balance_after=D("35.50"), blocked_after=False)


def test_the_charge_that_reaches_the_credit_limit_is_accepted_and_blocks() -> None:
    """The service was used: the charge reaching or passing the limit is kept and blocks."""
    exact = apply_charge("postpaid", D("90.00"), D("100.00"), D("10.00"))
    beyond = apply_charge("postpaid", D("90.00"), D("100.00"), D("30.00"))

    assert isinstance(exact, BalanceChange)
    assert (exact.balance_after, exact.blocked_after) == (D("100.00"), True)
    assert isinstance(beyond, BalanceChange)
    assert (beyond.balance_after, beyond.blocked_after) == (D("120.00"), True)


def test_a_postpaid_customer_at_the_limit_is_refused_further_charges() -> None:
    """At (or over) the credit limit every charge is refused with credit_limit_reached."""
    refusal = apply_charge("postpaid", D("100.00"), D("100.00"), D("0.01"))

    assert isinstance(refusal, Refusal)
    assert refusal.code == "credit_limit_reached"


def test_a_postpaid_customer_without_a_credit_limit_is_never_blocked() -> None:
    """A null credit limit means no limit."""
    change = apply_charge("postpaid", D("1000000"), None, D("5"))

    assert isinstance(change, BalanceChange)
    assert not change.blocked_after


def test_a_payment_under_the_limit_unblocks_and_one_that_is_not_enough_does_not() -> None:
    """Unblocking needs the balance back strictly under the limit."""
    partial = apply_payment("postpaid", D("120.00"), D("100.00"), D("20.00"))
    enough = apply_payment("postpaid", D("120.00"), D("100.00"), D("20.01"))

    assert isinstance(partial, BalanceChange)
    assert (partial.balance_after, partial.blocked_after) == (D("100.00"), True)
    assert isinstance(enough, BalanceChange)
    assert (enough.delta, enough.balance_after, enough.blocked_after) == (
        D("-20.01"),
        D("99.99"),
        False,
    )


def test_a_prepaid_charge_above_the_funds_is_refused() -> None:
    """A charge greater than the available funds is refused: funds never go negative."""
    refusal = apply_charge("prepaid", D("5.00"), None, D("5.01"))

    assert isinstance(refusal, Refusal)
    assert refusal.code == "insufficient_funds"


def test_a_prepaid_charge_to_exactly_zero_is_accepted_and_blocks() -> None:
    """Funds reaching zero block the customer; any charge at zero is refused."""
    change = apply_charge("prepaid", D("5.00"), None, D("5.00"))

    assert change == BalanceChange(delta=D("-5.00"), balance_after=D("0.00"), blocked_after=True)
    refusal = apply_charge("prepaid", D("0.00"), None, D("0.01"))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "insufficient_funds"


def test_a_top_up_unblocks_a_prepaid_customer() -> None:
    """A top-up raises the funds above zero and unblocks."""
    change = apply_payment("prepaid", D("0.00"), None, D("20.00"))

    assert change == BalanceChange(delta=D("20.00"), balance_after=D("20.00"), blocked_after=False)


def test_non_positive_amounts_are_refused() -> None:
    """Zero and negative amounts are not charges or payments."""
    for amount in (D("0"), D("-1")):
        charge = apply_charge("postpaid", D("0"), None, amount)
        payment = apply_payment("prepaid", D("0"), None, amount)
        assert isinstance(charge, Refusal)
        assert charge.code == "not_positive"
        assert isinstance(payment, Refusal)
        assert payment.code == "not_positive"
