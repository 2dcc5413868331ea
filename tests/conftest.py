"""Shared fixtures: users in roles, API clients, isolated storages, and the S3 API.

With FERRY_TEST_SERVICES=1 (`make test-services`) settings point at PostgreSQL, Redis and
an S3 endpoint on loopback; the session starts moto's server there and stops it after.
"""

import io
import os
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.files.storage import storages
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from filesync import services
from filesync.models import Role

SERVICES = os.environ.get("FERRY_TEST_SERVICES") == "1"


@pytest.fixture(scope="session", autouse=True)
def s3_server():
    """Serve the S3 API on the configured loopback endpoint for the whole session."""
    if not django_settings.AWS_STORAGE_BUCKET_NAME:
        yield None
        return
    from moto.server import ThreadedMotoServer

    endpoint = urlparse(django_settings.AWS_S3_ENDPOINT_URL)
    assert endpoint.hostname in {"127.0.0.1", "localhost"}, "tests only talk to loopback"
    server = ThreadedMotoServer(ip_address=endpoint.hostname, port=endpoint.port, verbose=False)
    server.start()
    boto3.client(
        "s3",
        endpoint_url=django_settings.AWS_S3_ENDPOINT_URL,
        region_name=django_settings.AWS_S3_REGION_NAME,
    ).create_bucket(Bucket=django_settings.AWS_STORAGE_BUCKET_NAME)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated_storages(settings, tmp_path):
    """Give each test its own storage root: a temp dir, or a fresh key prefix on S3."""
    prefix = f"test-{uuid.uuid4().hex}"
    configured = {}
    for alias, conf in settings.STORAGES.items():
        options = dict(conf.get("OPTIONS", {}))
        if "location" in options and "bucket_name" in options:
            options["location"] = f"{prefix}/{options['location']}"
        elif "location" in options:
            options["location"] = str(tmp_path / "storage" / alias)
        configured[alias] = {**conf, "OPTIONS": options}
    settings.STORAGES = configured
    settings.FILE_UPLOAD_TEMP_DIR = None
    yield


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def stored_names(alias: str) -> list[str]:
    """Every name kept in a storage, walking its directories."""
    storage = storages[alias]
    names, pending = [], [""]
    while pending:
        directory = pending.pop()
        try:
            dirs, files = storage.listdir(directory)
        except FileNotFoundError:
            continue
        names += [f"{directory}{name}" for name in files]
        pending += [f"{directory}{name}/" for name in dirs]
    return sorted(names)


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(
            username=username, password="pw-" + username, **extra
        )

    return make


@pytest.fixture
def owner(make_user):
    return make_user("olivia")


@pytest.fixture
def editor(make_user):
    return make_user("eddie")


@pytest.fixture
def viewer(make_user):
    return make_user("vera")


@pytest.fixture
def outsider(make_user):
    return make_user("oscar")


@pytest.fixture
def team(owner, editor, viewer):
    team = services.create_team(name="Studio", owner=owner)
    services.set_membership(team=team, user=editor, role=Role.EDITOR)
    services.set_membership(team=team, user=viewer, role=Role.VIEWER)
    return team


@pytest.fixture
def project(team):
    return services.create_project(team=team, name="Website")


@pytest.fixture
def library(project):
    return services.create_file(
        project=project,
        name="Brand library",
        is_library=True,
        assets={
            "components": {"btn": {"name": "Button"}},
            "colors": {"red": {"name": "Red", "color": "#ff0000"}},
            "typographies": {"h1": {"name": "Heading", "font_size": 32}},
        },
    )


@pytest.fixture
def design(project):
    return services.create_file(project=project, name="Landing page")


@pytest.fixture
def png_bytes():
    return b"\x89PNG\r\n\x1a\n" + os.urandom(4096)


@pytest.fixture
def media(design, png_bytes):
    return services.add_media(
        file=design, name="hero.png", stream=io.BytesIO(png_bytes), content_type="image/png"
    )


@pytest.fixture
def api_for():
    """An API client authenticated with a DRF token, as `Authorization: Token <key>`."""

    def client_for(user) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return client_for


@dataclass
class Workspace:
    project: object
    library: object
    designs: list
    media: list


@pytest.fixture
def workspace(project, library, settings) -> Workspace:
    """Two designs using a library's component, colour and typography, with media.

    Media are large enough (3 parts of the configured part size) that an export spans
    several parts on any sink.
    """
    part = max(
        settings.EXPORT_PART_SIZE, 5 * 2**20 if django_settings.AWS_STORAGE_BUCKET_NAME else 0
    )
    designs, media = [], []
    for n in range(2):
        design = services.create_file(project=project, name=f"Design {n}")
        services.link_library(file=design, library=library)
        picture = services.add_media(
            file=design,
            name=f"photo-{n}.png",
            stream=io.BytesIO(b"\x89PNG\r\n\x1a\n" + os.urandom(int(part * 1.5))),
            content_type="image/png",
        )
        for p in range(3):
            services.add_page(
                file=design,
                name=f"Page {p}",
                objects={
                    "c": {
                        "type": "component-instance",
                        "component_file": str(library.id),
                        "component_id": "btn",
                    },
                    "f": {"type": "rect", "fill_color_ref": {"file": str(library.id), "id": "red"}},
                    "t": {"type": "text", "typography_ref": {"file": str(library.id), "id": "h1"}},
                    "i": {"type": "image", "image": str(picture.id)},
                    "l": {"type": "rect", "fill_color_ref": {"file": str(design.id), "id": "own"}},
                },
            )
        designs.append(design)
        media.append(picture)
    return Workspace(project=project, library=library, designs=designs, media=media)
