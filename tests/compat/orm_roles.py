"""What the Python ORM scripts of tests/tests/e2e/compat_orms.rs (Peewee, Pony, Tortoise) share: each
user's role, the contacts columns the matrix drops for the role (its application does not map them),
and the changes their saves make to a loaded row. Not for: the operations (one script per ORM) or
what a role must get (the Rust test holds that); outcome.py prints the lines.
"""

ROLES = {"dora": "dpo", "sam": "sales", "tom": "support", "ana": "analyst"}

# The columns of contacts the matrix drops for each role.
DROPPED = {
    "support": {"birth_date", "tax_code", "street_address"},
    "analyst": {"first_name", "last_name", "email", "phone", "tax_code", "street_address"},
}


def dropped(role):
    return DROPPED.get(role, set())


def change_shown(row, role, city):
    """A change the role may save: contacts' city; for support, which may not update contacts, a
    ticket's status."""
    if role == "support":
        row.status = "pending"
    else:
        row.city = city


def change_masked(row, role):
    """A change of a value the role reads masked (the tax code; for support a ticket's redacted
    subject); the city for the analyst, which has no masked column to change (and writes nothing)."""
    if role == "support":
        row.subject = "A new subject"
    elif hasattr(row, "tax_code"):
        row.tax_code = "XXXXXXXXXXXXXXXX"
    else:
        row.city = "Elsewhere"
