"""The views of django_site.py: each answers JSON, the database's refusal included (SQLSTATE and
message), with the identity of the Django connection that served it."""

import json

from django.contrib.auth import views as auth_views
from django.db import DatabaseError, connection, transaction
from django.http import HttpResponse
from django.urls import path

COLUMNS = ("id", "first_name", "last_name", "email", "phone", "city", "region")


def answer(fn):
    """Runs fn() and answers its result as JSON, or the database's refusal (SQLSTATE, message)."""
    from outcome import sqlstate_of

    def view(request):
        try:
            body = {"result": fn(request)}
        except DatabaseError as err:
            body = {"refused": sqlstate_of(err), "message": str(err).splitlines()[0]}
        body["connection"] = id(connection.connection)
        return HttpResponse(json.dumps(body, default=str), content_type="application/json")

    return view


def contacts(request):
    from crmapp.models import Contact

    rows = [list(map(str, row)) for row in Contact.objects.order_by("id").values_list(*COLUMNS)[:20]]
    regions = sorted(set(Contact.objects.values_list("region", flat=True)))
    return {"rows": rows, "regions": regions}


def update_own(request):
    from crmapp.models import Contact

    with transaction.atomic():
        contact = Contact.objects.filter(region="north").order_by("id").first()
        contact.city = f"Genova-{request.user.username}"
        contact.save(update_fields=["city"])
    return Contact.objects.get(id=contact.id).city


def update_contact(request):
    from crmapp.models import Contact

    return Contact.objects.filter(id=1).update(city="Roma")


def insert_south(request):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts (id, first_name, last_name, email, phone, region, city) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [700_001, "Eve", "South", "eve.south@example.it", "+39 000 700001", "south", "Napoli"],
        )


def open_ticket(request):
    from crmapp.models import Ticket

    with transaction.atomic():
        Ticket.objects.create(id=700_002, contact_id=1, subject="call me on +39 333 1234567",
                              body="asked for a callback", status="open")
    return Ticket.objects.get(id=700_002).subject


def health_records(request):
    from crmapp.models import HealthRecord

    return HealthRecord.objects.count()


def as_dpo(user):
    """A CLAIMS hook asserting a role the application may not act as."""
    return {"role": "dpo"}


urlpatterns = [
    path("login/", auth_views.LoginView.as_view()),
    path("contacts/", answer(contacts)),
    path("update-own/", answer(update_own)),
    path("update-contact/", answer(update_contact)),
    path("insert-south/", answer(insert_south)),
    path("open-ticket/", answer(open_ticket)),
    path("health-records/", answer(health_records)),
]
