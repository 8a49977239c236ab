"""Django against the reference CRM through Maschera. Usage: python3 client.py URI USER [--migrate].
With --migrate, first runs `manage.py migrate` (Django's own tables: contenttypes, auth). Then list,
filter, paginate, create, update, delete, transactions, select_for_update and aggregates over the CRM
models (crmapp/models.py, managed = False). Prints one outcome line per operation (see outcome.py)."""

import os
import sys
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

URI, USER = sys.argv[1], sys.argv[2]
from django_env import use_database  # noqa: E402

use_database(URI, "settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.db import DatabaseError, connection, transaction  # noqa: E402
from django.db.models import Avg, Count, Max, Sum  # noqa: E402

from crmapp.models import Consent, Contact, Deal, HealthRecord, Interaction, Ticket  # noqa: E402
from django.utils import timezone  # noqa: E402
from outcome import run  # noqa: E402

BASE_ID = {"dora": 300_000, "tom": 250_000}.get(USER, 200_000)
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
    # Grouped by the primary key alone, as Django does for its managed models on PostgreSQL: valid for
    # a table, and through the proxy for the role's view too.
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.id, c.email, count(i.id) FROM contacts c LEFT JOIN interactions i ON i.contact_id = c.id "
            "GROUP BY c.id ORDER BY c.id LIMIT 5"
        )
        by_key = cur.fetchall()
    return f"n={totals['n']} stages={len(by_stage)} regions={[r['region'] for r in per_region]} by_key={len(by_key)}"


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
    """save() without update_fields writes every field back, the masked ones included (as read: a
    generated contact with a birth date and a tax code), and the same for a deal and an interaction."""
    contact = Contact.objects.filter(tax_code__isnull=False, birth_date__isnull=False).order_by("id").first()
    contact.last_activity_at = contact.created_at
    contact.save()
    deal = Deal.objects.get(id=BASE_ID)
    deal.stage = "won"
    deal.save()
    interaction = Interaction.objects.get(id=BASE_ID)
    interaction.notes = "saved in full"
    interaction.save()
    saved = Contact.objects.get(id=contact.id)
    return f"tax={saved.tax_code} birth={saved.birth_date} stage={Deal.objects.get(id=BASE_ID).stage}"


def update_changed_masked():
    """save() of a changed masked value: refused (the stored value is not the caller's to change)."""
    contact = Contact.objects.filter(tax_code__isnull=False).order_by("id").first()
    contact.tax_code = "XXXXXXXXXXXXXXXX"
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


def support_tickets():
    """Support: objects.create of a ticket, then a full save() (the redacted subject and body written
    back as read); the stored text keeps what the role reads redacted."""
    ticket = Ticket.objects.create(id=BASE_ID, contact_id=1, subject=f"mail me at t{BASE_ID}@example.it",
                                   body="or call +39 333 1234567", status="open")
    ticket = Ticket.objects.get(id=BASE_ID)
    ticket.status = "closed"
    ticket.save()
    saved = Ticket.objects.get(id=BASE_ID)
    return f"subject={saved.subject} status={saved.status}"


def support_ticket_changed():
    ticket = Ticket.objects.get(id=BASE_ID)
    ticket.subject = "mail me at another@example.it"
    ticket.save()


def support_consents():
    """Support records a consent and its withdrawal (objects.create, then a full save())."""
    consent = Consent.objects.create(id=BASE_ID, contact_id=1, purpose="newsletter",
                                     granted_at=timezone.now(), source="phone")
    consent.withdrawn_at = timezone.now()
    consent.save()
    return f"withdrawn={Consent.objects.get(id=BASE_ID).withdrawn_at is not None}"


def support_interactions():
    Interaction.objects.create(id=BASE_ID, contact_id=1, channel="call", notes="called back on +39 333 1234567")
    return f"notes={Interaction.objects.get(id=BASE_ID).notes}"


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
    ("update_changed_masked", update_changed_masked),
    ("transactions", transactions),
    ("select_for_update", select_for_update),
    ("delete", delete),
    ("update_other_region", update_other_region),
    ("health_records", health_records),
    ("after_refusal", after_refusal),
]

SUPPORT_OPERATIONS = [
    ("support_tickets", support_tickets),
    ("support_ticket_changed", support_ticket_changed),
    ("support_consents", support_consents),
    ("support_interactions", support_interactions),
    ("health_records", health_records),
]

if __name__ == "__main__":
    if "--migrate" in sys.argv:
        run("migrate", migrate, DB_ERRORS)
    for name, fn in (SUPPORT_OPERATIONS if USER == "tom" else OPERATIONS):
        run(name, fn, DB_ERRORS)
    print("done")
