"""Checks that refuse to start a deployment that would run unsafely.

manage.py commands (runserver, migrate, qcluster, check) run the system checks before they
start; uvicorn does not, so project/asgi.py calls `require_passing_checks` itself.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

SECRET_KEY_MISSING = checks.Error(
    "DJANGO_SECRET_KEY is not set and DEBUG is off.",
    hint=(
        "Set DJANGO_SECRET_KEY to the same 50 or more random characters on every node, e.g. "
        "from `python -c 'import secrets; print(secrets.token_urlsafe(50))'`; "
        "DJANGO_DEBUG=1 uses a per-machine development key instead."
    ),
    id="ferry.E001",
)


@checks.register(checks.Tags.security)
def check_secret_key_given(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Settings leave SECRET_KEY empty rather than invent one when DEBUG is off: each node
    would sign sessions, CSRF tokens and links with a key of its own, lost with var/."""
    try:
        settings.SECRET_KEY  # noqa: B018  (raises when empty)
    except ImproperlyConfigured:
        return [SECRET_KEY_MISSING]
    return []


def require_passing_checks() -> None:
    """Raise ImproperlyConfigured when a system check finds an error, as a manage.py
    command would refuse to start."""
    errors = [
        message
        for message in checks.run_checks()
        if message.is_serious() and not message.is_silenced()
    ]
    if errors:
        raise ImproperlyConfigured("\n".join(["System check errors:", *map(str, errors)]))
