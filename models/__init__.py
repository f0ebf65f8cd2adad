"""The data model, the domain rules with no I/O, and the schema migrations.

Importing the package registers every table on `Base.metadata`.
"""

from models.base import Base
from models.billing import (
    Charge,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LedgerEntry,
    LedgerEntryType,
    Notification,
    NotificationStatus,
    Payment,
)
from models.catalog import BusinessModel, CustomerClass, Reseller
from models.closed_period import ClosedPeriod
from models.collections import ApplicationSource, CollectionStep, CreditNote, InvoiceApplication
from models.customer import BalanceControl, BlockReason, Customer, CustomerBlock, CustomerStatus
from models.customer_history import CustomerChange
from models.dead_letter import DeadLetter
from models.plans import Plan, PlanFee, Subscription, SubscriptionFee

__all__ = [
    "ApplicationSource",
    "BalanceControl",
    "Base",
    "BlockReason",
    "BusinessModel",
    "Charge",
    "ClosedPeriod",
    "CollectionStep",
    "CreditNote",
    "Customer",
    "CustomerBlock",
    "CustomerChange",
    "CustomerClass",
    "CustomerStatus",
    "DeadLetter",
    "Invoice",
    "InvoiceApplication",
    "InvoiceLine",
    "InvoiceStatus",
    "LedgerEntry",
    "LedgerEntryType",
    "Notification",
    "NotificationStatus",
    "Payment",
    "Plan",
    "PlanFee",
    "Reseller",
    "Subscription",
    "SubscriptionFee",
]
