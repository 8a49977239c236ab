"""The CRM's login through the application's own database account, so that the sales staff's account
never reads password hashes nor writes users: Django checks passwords in the application, so the user
it authenticates is read, and users are written (last_login, a rehashed password), over the database
alias `auth` (an unrestricted account), while every other query runs over `default` (the restricted
account the policy covers). realcrm_settings.py turns it on when MASCHERA_AUTH_DB_USER is set.
Not for: permissions or any other table (they go over `default`)."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

AUTH_DB = "auth"


class AuthDatabaseBackend(ModelBackend):
    """Django's ModelBackend with the user (and its password hash) read over the `auth` alias."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        users = get_user_model()
        if username is None:
            username = kwargs.get(users.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = users._default_manager.db_manager(AUTH_DB).get_by_natural_key(username)
        except users.DoesNotExist:
            users().set_password(password)  # the same time as a wrong password (as ModelBackend)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

    def get_user(self, user_id):
        # The session's auth hash is derived from the password hash: the user is read over `auth`.
        users = get_user_model()
        try:
            user = users._default_manager.db_manager(AUTH_DB).get(pk=user_id)
        except users.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None


class AuthRouter:
    """Writes of users over `auth`; every other read and write over `default`."""

    def db_for_read(self, model, **hints):
        return "default"

    def db_for_write(self, model, **hints):
        return AUTH_DB if model is get_user_model() else "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, **hints):
        return db == "default"
