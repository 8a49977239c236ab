"""Django against the reference CRM through Maschera. Usage: python3 client.py URI USER [--migrate].
With --migrate, first runs `manage.py migrate` (Django's own tables: contenttypes, auth). Then list,
filter, paginate, create, update, delete, transactions, select_for_update and aggregates over the CRM
models (crmapp/models.py, managed = False). Prints one outcome line per operation (see outcome.py)."""

import os
import sys
from decimal import Decimal
from urllib.parse import unquote, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

URI, USER = sys.argv[1], sys.argv[2]
_u = urlparse(URI)
os.environ.update(
    DJANGO_SETTINGS_MODULE="settings",
    MASCHERA_DB_HOST=_u.hostname,
    MASCHERA_DB_PORT=str(_u.port),
    MASCHERA_DB_USER=unquote(_u.username),
    MASCHERA_DB_PASSWORD=unquote(_u.password),
    MASCHERA_DB_NAME=_u.path.lstrip("/"),
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.db import DatabaseError, connection, transaction  # noqa: E402
from django.db.models import Avg, Count, Max, Sum  # noqa: E402

from crmapp.models import Contact, Deal, HealthRecord, Interaction  # noqa: E402
from outcome import run  # noqa: E402

BASE_ID = 300_000 if USER == "dora" else 200_000
DB_ERRORS = (DatabaseError,)


def migrate():
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import Group
    Group.objects.get_or_create(name="crm-compat")
    return f"groups={Group.objects.count()}"


def introspect():
    tables = sorted(connection.introspection.table_names(include_views=True))
    with connection.cursor() as cur:
        columns = [c.name for c in connection.introspection.get_table_description(cur, "contacts")]
    return f"tables={','.join(t for t in tables if not t.startswith(('auth_', 'django_')))} contacts={','.join(columns)}"


def list_contacts():
    contacts = list(Contact.objects.order_by("id")[:10])
    return f"n={len(contacts)} regions={sorted({c.region for c in contacts})} tax={contacts[0].tax_code}"


def filter_contacts():
    n = Contact.objects.filter(city__isnull=False, email__contains="@").exclude(region="centre").count()
    return f"count={n}"


def paginate():
    page = Paginator(Contact.objects.order_by("id").only("id", "email"), 25).page(2)
    return f"page=2 of {page.paginator.num_pages} first={page.object_list[0].id}"


def iterate():
    """QuerySet.iterator() reads through a server-side (named) cursor in chunks."""
    n = sum(1 for _ in Contact.objects.order_by("id").only("id", "city").iterator(chunk_size=30))
    return f"iterated={n}"


def related():
    deal = Deal.objects.select_related("contact").order_by("id").first()
    interactions = Contact.objects.prefetch_related("interactions").order_by("id")[:5]
    return f"deal_contact_region={deal.contact.region} prefetched={sum(len(c.interactions.all()) for c in interactions)}"


def aggregates():
    totals = Deal.objects.aggregate(n=Count("id"), total=Sum("amount"), avg=Avg("amount"), top=Max("amount"))
    by_stage = Deal.objects.values("stage").annotate(n=Count("id")).order_by("stage")
    per_region = Contact.objects.values("region").annotate(deals=Count("deals")).order_by("region")
    return f"n={totals['n']} stages={len(by_stage)} regions={[r['region'] for r in per_region]}"


def create_full_model():
    """The full model inserts every field, NULL into the birth date and tax code it was not given."""
    with transaction.atomic():
        Contact.objects.create(id=BASE_ID + 2, first_name="Full", last_name="Model",
                               email=f"f{BASE_ID}@example.it", phone=f"+39 007 {BASE_ID}", region="north")
        Contact.objects.filter(id=BASE_ID + 2).delete()


def create():
    """Creates a contact with the columns every user may write, then its deal and interaction."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(
                "INSERT INTO contacts (id, first_name, last_name, email, phone, region, city) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [BASE_ID, "Django", "Tester", f"django{BASE_ID}@example.it", f"+39 008 {BASE_ID}", "north", "Torino"],
            )
        contact = Contact.objects.get(id=BASE_ID)
        Deal.objects.create(id=BASE_ID, contact=contact, amount=Decimal("99.90"), stage="open")
        Interaction.objects.create(id=BASE_ID, contact=contact, channel="email", notes="compat suite")
    return f"deals={contact.deals.count()}"


def update():
    contact = Contact.objects.get(id=BASE_ID)
    contact.city = "Genova"
    contact.save(update_fields=["city"])
    Deal.objects.filter(id=BASE_ID).update(stage="won")
    return f"city={Contact.objects.get(id=BASE_ID).city} stage={Deal.objects.get(id=BASE_ID).stage}"


def update_full_save():
    """save() without update_fields writes every field back, the masked ones included."""
    contact = Contact.objects.get(id=BASE_ID)
    contact.city = "Genova"
    contact.save()


def transactions():
    try:
        with transaction.atomic():
            Contact.objects.filter(id=BASE_ID).update(city="Roma")
            with transaction.atomic():  # a savepoint
                Deal.objects.filter(id=BASE_ID).update(stage="lost")
                raise RuntimeError("roll back the savepoint")
    except RuntimeError:
        pass
    return f"city={Contact.objects.get(id=BASE_ID).city} stage={Deal.objects.get(id=BASE_ID).stage}"


def select_for_update():
    with transaction.atomic():
        contact = Contact.objects.select_for_update().get(id=BASE_ID)
        Contact.objects.filter(id=contact.id).update(last_activity_at=contact.created_at)
    with transaction.atomic():
        deals = list(Deal.objects.select_for_update(of=("self",)).filter(contact_id=BASE_ID))
    return f"locked={len(deals)}"


def delete():
    Interaction.objects.filter(id=BASE_ID).delete()
    Deal.objects.filter(id=BASE_ID).delete()
    Contact.objects.filter(id=BASE_ID).delete()
    return f"gone={not Contact.objects.filter(id=BASE_ID).exists()}"


def update_other_region():
    """Moves a contact out of the user's region."""
    with transaction.atomic():
        n = Contact.objects.filter(id__in=Contact.objects.filter(region="north").values("id")[:1]).update(region="south")
        transaction.set_rollback(True)
    return f"updated={n}"


def health_records():
    return f"n={HealthRecord.objects.count()}"


def after_refusal():
    return f"n={Contact.objects.count()}"


OPERATIONS = [
    ("introspect", introspect),
    ("list", list_contacts),
    ("filter", filter_contacts),
    ("paginate", paginate),
    ("iterate", iterate),
    ("related", related),
    ("aggregates", aggregates),
    ("create_full_model", create_full_model),
    ("create", create),
    ("update", update),
    ("update_full_save", update_full_save),
    ("transactions", transactions),
    ("select_for_update", select_for_update),
    ("delete", delete),
    ("update_other_region", update_other_region),
    ("health_records", health_records),
    ("after_refusal", after_refusal),
]

if __name__ == "__main__":
    if "--migrate" in sys.argv:
        run("migrate", migrate, DB_ERRORS)
    for name, fn in OPERATIONS:
        run(name, fn, DB_ERRORS)
    print("done")
