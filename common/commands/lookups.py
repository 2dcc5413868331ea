"""What management commands look up from their options, refused as a
CommandError a person can act on."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


def user_named(username: str | None):
    """The user, or None when no name was given."""
    if not username:
        return None
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None


def row_with_id(model, pk, label: str):
    """The row, or None when no id was given."""
    if pk is None:
        return None
    try:
        return model.objects.get(pk=pk)
    except (model.DoesNotExist, ValidationError, ValueError):
        raise CommandError(f"No {label} with id {pk}.") from None
