"""A user's webhook secret, as docs/api.md promises it: made (or rotated) through the API or
`manage.py webhook_secret`, shown once when made and never again: not by the API, not by
the admin."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from standardwebhooks import Webhook

from exports import services
from exports.models import WebhookSecret
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db

ROUTE = "/api/webhook-secret/"


def test_a_post_shows_the_secret_once_and_a_get_only_that_it_exists(api_for, editor):
    client = api_for(editor)
    assert client.get(ROUTE).json() == {"exists": False, "created_at": None}

    made = client.post(ROUTE)
    assert made.status_code == 201, made.content
    assert made["Cache-Control"] == "no-store"
    secret = made.json()["secret"]
    assert secret.startswith("whsec_") and Webhook(secret)  # the library takes it as it is

    shown = client.get(ROUTE)
    assert shown.status_code == 200
    assert shown.json() == {"exists": True, "created_at": made.json()["created_at"]}
    assert secret not in shown.content.decode()
    assert secret[len("whsec_") :] not in shown.content.decode()


def test_a_second_post_rotates_the_secret(api_for, editor):
    client = api_for(editor)
    first = client.post(ROUTE).json()
    second = client.post(ROUTE).json()
    assert second["secret"] != first["secret"] and second["created_at"] > first["created_at"]
    assert WebhookSecret.objects.get().secret == second["secret"]


def test_each_user_has_their_own(api_for, editor, viewer):
    mine = api_for(editor).post(ROUTE).json()["secret"]
    assert api_for(viewer).get(ROUTE).json()["exists"] is False
    theirs = api_for(viewer).post(ROUTE).json()["secret"]
    assert mine != theirs and WebhookSecret.objects.count() == 2


def test_anonymous_requests_are_refused_and_write_nothing(api_for):
    client = api_for(None)
    before = store_state()
    assert client.post(ROUTE).status_code in (401, 403)
    assert client.get(ROUTE).status_code in (401, 403)
    assert store_state() == before


def test_the_secret_is_in_no_export_document(api_for, editor, workspace, settings):
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    client = api_for(editor)
    secret = client.post(ROUTE).json()["secret"]
    created = client.post(
        "/api/exports/",
        {"project": str(workspace.project.id), "callback_url": "http://127.0.0.1:9/hook"},
        format="json",
    )
    assert created.status_code == 202, created.content
    assert created.json()["callback"] == {
        "url": "http://127.0.0.1:9/hook",
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": None,
    }
    for response in (
        created,
        client.get(created["Location"]),
        client.get("/api/exports/"),
        client.get(ROUTE),
    ):
        assert response.status_code in (200, 202)
        assert secret not in response.content.decode()


def test_the_admin_lists_secrets_without_their_values(admin_client, editor, workspace, settings):
    settings.EXPORT_CALLBACK_HOSTS = ["127.0.0.1"]
    _, secret = services.issue_webhook_secret(user=editor)
    row = WebhookSecret.objects.get()
    job = services.create_export_job(
        user=editor, project=workspace.project, callback_url="http://127.0.0.1:9/hook"
    )
    pages = {
        "list": admin_client.get("/admin/exports/webhooksecret/"),
        "row": admin_client.get(f"/admin/exports/webhooksecret/{row.pk}/change/"),
        "job": admin_client.get(f"/admin/exports/exportjob/{job.pk}/change/"),
    }
    assert editor.username in pages["list"].content.decode()
    assert "http://127.0.0.1:9/hook" in pages["job"].content.decode()
    assert "pending, 0 attempts" in pages["job"].content.decode()
    for name, page in pages.items():
        assert page.status_code == 200, name
        assert secret not in page.content.decode(), name
        assert secret[len("whsec_") :] not in page.content.decode(), name
    assert admin_client.get("/admin/exports/webhooksecret/add/").status_code == 403
    assert admin_client.get(f"/admin/exports/webhooksecret/{row.pk}/delete/").status_code == 403


def test_a_user_without_staff_cannot_open_the_secrets_admin(editor):
    client = Client()
    client.force_login(editor)
    assert client.get("/admin/exports/webhooksecret/").status_code == 302  # to the login


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_a_new_secret_once(editor):
    printed, note = run("webhook_secret", "--user", editor.username)
    secret = printed.strip()
    assert printed == secret + "\n" and note == ""
    assert WebhookSecret.objects.get(user=editor).secret == secret

    again, note = run("webhook_secret", "--user", editor.username)
    assert again.strip() != secret and note.startswith("Replaced the secret made ")
    assert WebhookSecret.objects.get(user=editor).secret == again.strip()


def test_the_command_refuses_an_unknown_user_and_writes_nothing(editor):
    before = store_state()
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("webhook_secret", "--user", "ghost")
    assert store_state() == before
