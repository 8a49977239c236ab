"""Models over the reference CRM tables (examples/crm/schema.sql). Django does not manage them."""

from django.db import models


class Contact(models.Model):
    id = models.BigIntegerField(primary_key=True)
    first_name = models.TextField()
    last_name = models.TextField()
    email = models.TextField(unique=True)
    phone = models.TextField(unique=True)
    birth_date = models.DateField(null=True)
    tax_code = models.TextField(null=True)
    street_address = models.TextField(null=True)
    city = models.TextField(null=True)
    region = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "contacts"


class Deal(models.Model):
    id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, models.DO_NOTHING, related_name="deals")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    stage = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "deals"


class Interaction(models.Model):
    id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, models.DO_NOTHING, related_name="interactions")
    channel = models.TextField()
    notes = models.TextField(null=True)
    occurred_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "interactions"


class Consent(models.Model):
    id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, models.DO_NOTHING, related_name="consents")
    purpose = models.TextField()
    granted_at = models.DateTimeField()
    withdrawn_at = models.DateTimeField(null=True)
    source = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "consents"


class Ticket(models.Model):
    id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, models.DO_NOTHING, related_name="tickets")
    subject = models.TextField()
    body = models.TextField(null=True)
    status = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "tickets"


class HealthRecord(models.Model):
    id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, models.DO_NOTHING)
    condition = models.TextField()

    class Meta:
        managed = False
        db_table = "health_records"
