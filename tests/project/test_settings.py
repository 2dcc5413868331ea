"""Safe defaults: DEBUG off unless asked for, no start without a secret key, and the
production variables of docs/operations.md pass `manage.py check --deploy` clean.

Each case runs manage.py (or the ASGI app) in a subprocess on an environment built here,
because settings are read once, at import."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: docs/operations.md, "Production settings": the variables a deployment behind a TLS
#: proxy sets, beside its services.
PRODUCTION = {
    "DJANGO_ALLOWED_HOSTS": "ferry.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
}

PRINT_SETTING = "from django.conf import settings; print(settings.{})"


@pytest.fixture
def bare_env(tmp_path) -> dict:
    """Nothing of this run's environment but the path, and a var dir of its own."""
    return {"PATH": os.environ["PATH"], "FERRY_VAR_DIR": str(tmp_path / "var")}


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run(env, "manage.py", *args)


def test_debug_is_off_in_an_empty_environment(bare_env):
    shown = manage(bare_env, "shell", "--no-imports", "-c", PRINT_SETTING.format("DEBUG"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "False"


def test_without_a_secret_key_and_debug_off_nothing_starts(bare_env, tmp_path):
    for command in (["check"], ["migrate", "--noinput"], ["qcluster"]):
        refused = manage(bare_env, *command)
        assert refused.returncode != 0, command
        assert "ferry.E001" in refused.stderr and "DJANGO_SECRET_KEY" in refused.stderr
    server = run(bare_env, "-c", "import project.asgi")
    assert server.returncode != 0
    assert "ImproperlyConfigured" in server.stderr and "ferry.E001" in server.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_with_debug_on_a_development_key_is_kept_in_var(bare_env, tmp_path):
    env = {**bare_env, "DJANGO_DEBUG": "1"}
    assert manage(env, "check").returncode == 0
    key = (tmp_path / "var" / "secret_key").read_text()
    shown = manage(env, "shell", "--no-imports", "-c", PRINT_SETTING.format("SECRET_KEY"))
    assert shown.stdout.strip() == key


def test_the_production_variables_pass_check_deploy(bare_env):
    env = {**bare_env, **PRODUCTION, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    checked = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues (0 silenced)." in checked.stdout
    assert "WARNING" not in checked.stderr


def test_the_asgi_app_starts_with_a_key(bare_env):
    started = run({**bare_env, "DJANGO_SECRET_KEY": "k" * 50}, "-c", "import project.asgi")
    assert started.returncode == 0, started.stderr
