"""404 and 500 under /api/ in the API's one error shape, `{"detail": …}`; HTML elsewhere.
Django applies the handlers with DEBUG off only, which pytest-django forces."""

import uuid

import pytest
from django.test import Client


def test_settings_under_test_have_debug_off(settings):
    assert settings.DEBUG is False


@pytest.mark.django_db
def test_an_unrouted_api_path_answers_404_as_json(api_for, editor):
    for client in (api_for(editor), Client()):
        response = client.get("/api/no/such/route/")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "Not found."}


@pytest.mark.django_db(transaction=True)  # the SSE view reads on a thread of its own
def test_a_plain_django_views_404_under_api_keeps_its_message(api_for, editor):
    response = api_for(editor).get(f"/api/exports/{uuid.uuid4()}/events")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such export."}


@pytest.mark.django_db
def test_a_drf_views_404_has_the_same_shape(api_for, editor):
    response = api_for(editor).get(f"/api/exports/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}


def test_outside_the_api_a_404_is_a_page():
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.project.failing_urls")
def test_a_500_under_api_is_json_without_the_exceptions_details():
    response = Client(raise_request_exception=False).get("/api/broken")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "A server error occurred."}
    assert b"/srv/ferry" not in response.content and b"Traceback" not in response.content


@pytest.mark.urls("tests.project.failing_urls")
def test_a_500_outside_the_api_is_a_page():
    response = Client(raise_request_exception=False).get("/broken")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"/srv/ferry" not in response.content
