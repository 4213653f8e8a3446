"""The data contract: the columns a transactions file and a customers file must have.

Kept free of heavy imports so the services can use the same vocabularies.
"""

from __future__ import annotations

MERCHANT_CATEGORIES = (
    "groceries", "dining", "fuel", "retail", "online_retail", "travel",
    "entertainment", "utilities", "health", "electronics", "cash",
)
CHANNELS = ("pos", "online", "mobile", "atm")

# column -> (kind, description). Kinds: "string", "timestamp", "float", "label".
TRANSACTION_COLUMNS: dict[str, tuple[str, str]] = {
    "transaction_id": ("string", "Unique id of the transaction."),
    "customer_id": ("string", "Id of the customer who made it."),
    "timestamp": ("timestamp", "When it happened (UTC, or with an offset)."),
    "amount": ("float", "Amount in the account currency; positive and finite."),
    "merchant_id": ("string", "Id of the merchant."),
    "merchant_category": ("string", f"One of: {', '.join(MERCHANT_CATEGORIES)}."),
    "channel": ("string", f"One of: {', '.join(CHANNELS)}."),
    "country": ("string", "ISO 3166-1 alpha-2 country of the merchant."),
    "device_id": ("string", "Card or device used."),
    "is_fraud": ("label", "1 when the transaction was confirmed fraudulent, else 0."),
}

CUSTOMER_COLUMNS: dict[str, tuple[str, str]] = {
    "customer_id": ("string", "Unique id of the customer."),
    "signup_date": ("timestamp", "When the customer opened the account."),
    "age": ("float", "Age in years at the start of the data."),
    "home_country": ("string", "ISO 3166-1 alpha-2 country of residence."),
}
