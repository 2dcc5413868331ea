"""Shared fixtures: users in roles, API clients, isolated storages, and the S3 API.

With FERRY_TEST_SERVICES=1 (`make test-services`) settings point at PostgreSQL, Redis and
an S3 endpoint on loopback; the session starts moto's server there and stops it after.
"""

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import boto3
import httpx
import pytest
from django.conf import settings as django_settings
from django.core.files.storage import storages
from django.db import connection
from django_q.brokers import get_broker
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from filesync import services
from filesync.models import Role
from tests.waiting import patience, stop_process, wait_for

SERVICES = os.environ.get("FERRY_TEST_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent
#: The longest one test may run (setup and teardown included) before pytest-timeout fails
#: it and the run goes on; a test may ask for more with @pytest.mark.timeout(seconds).
#: Both are stretched by FERRY_TEST_PATIENCE.
TEST_TIMEOUT = 180

# pytest-django loads the settings before this module, with DEBUG off and, unless the
# environment gives one, no SECRET_KEY (the check ferry.E001 refuses to start so). The
# suite signs with a key of its own, and the processes it starts inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", "ferry-tests-" + "not-a-secret-" * 4)
django_settings.SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]


def pytest_configure(config):
    """A run started in the background by a non-interactive shell (`make test &`, nohup)
    ignores SIGINT, and every child inherits that: tests that send SIGINT to a child, as
    Ctrl-C would, would wait for their timeout. Children get SIGINT at its default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items):
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = marker.args[0] if marker and marker.args else TEST_TIMEOUT
        item.add_marker(pytest.mark.timeout(patience(seconds)), append=False)
    start_the_longest_first(items)


# --- parallel runs (pytest-xdist, `make test` runs TEST_WORKERS of them) ---------------


def pytest_xdist_setupnodes(config, specs):
    """Each xdist worker keeps apart from the others as runs already do: its own django-q2
    queue and channel-layer prefix on Redis (a live test purges its queue at start, which
    would drop a live test's jobs on another worker) and its own S3 API server (the
    session's `s3_server`, stopped when the worker's tests are done), on a free port.

    Set here, in the process that starts the workers, because a worker reads them into
    Django's settings before any conftest is imported. The test database needs nothing:
    `django_db_modify_db_settings` names it after the worker's process (PostgreSQL) or puts
    it in the worker's own temporary directory (SQLite)."""
    for spec in specs:
        for name in ("Q_CLUSTER_NAME", "CHANNEL_LAYER_PREFIX"):
            if os.environ.get(name):
                spec.env[name] = f"{os.environ[name]}-{spec.id}"
        if endpoint := os.environ.get("AWS_S3_ENDPOINT_URL"):
            url = urlparse(endpoint)
            port = free_port()
            spec.env["AWS_S3_ENDPOINT_URL"] = url._replace(netloc=f"{url.hostname}:{port}").geturl()


def start_the_longest_first(items):
    """Live tests on no test database (they run their own processes on a database of their
    own; a kill and a takeover wait for a lease and a schedule, minutes) start first, those
    allowed the longest first. pytest-django puts them last, where a parallel run would end
    on them with its other workers idle. Tests on the test database keep pytest-django's
    order, which only orders them among themselves."""

    def on_no_database(item) -> bool:
        uses = {"db", "transactional_db", "django_db_setup"} & set(item.fixturenames)
        return (
            item.get_closest_marker("live")
            and not item.get_closest_marker("django_db")
            and not uses
        )

    def allowed(item) -> float:
        return item.get_closest_marker("timeout").args[0]

    first = sorted((item for item in items if on_no_database(item)), key=allowed, reverse=True)
    rest = [item for item in items if not on_no_database(item)]
    items[:] = first + rest


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """A test database of this run's own, so that runs on one machine never meet: SQLite in
    this run's temporary directory (a file, not memory, so that the servers and workers a
    test starts share it), or `test_<name>_<pid>` on PostgreSQL."""
    database = django_settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        name = str(tmp_path_factory.getbasetemp() / "test.sqlite3")
    else:
        name = f"test_{database['NAME']}_{os.getpid()}"
    database.setdefault("TEST", {})["NAME"] = name


@pytest.fixture(scope="session", autouse=True)
def drop_test_database():
    """Set up before pytest-django's test database and so torn down after it: drops it
    even when a connection is still open (a server or a worker thread closing late), which
    pytest-django's own teardown refuses to do; a run's database never outlives it."""
    yield
    database = django_settings.DATABASES["default"]
    name = database.get("TEST", {}).get("NAME")
    if database["ENGINE"].endswith("sqlite3") or not name:  # SQLite, or no database test ran
        return
    import psycopg

    with psycopg.connect(_postgres_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, whose commits on PostgreSQL do not wait for the disk
    (`synchronous_commit = off`, for every connection to it: the servers and workers a test
    starts too). A commit is as visible and as isolated as before; only a crash of the
    PostgreSQL server could lose the last ones, which no test does. Most tests commit every
    write (transactional tests), and a flushed commit cost ~10 ms on the CI machine."""
    database = connection.settings_dict
    if database["ENGINE"].endswith("postgresql"):
        with django_db_blocker.unblock():
            without_waiting_for_the_disk(database["NAME"])
            connection.close()  # the next connection takes the database's new default
    yield


def without_waiting_for_the_disk(name: str) -> None:
    import psycopg

    with psycopg.connect(_postgres_url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')


def _postgres_url(name: str) -> str:
    server = urlparse(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/x")
    return server._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session", autouse=True)
def s3_server():
    """Serve the S3 API on the configured loopback endpoint for the whole session."""
    if not django_settings.AWS_STORAGE_BUCKET_NAME:
        yield None
        return
    from moto.server import ThreadedMotoServer

    endpoint = urlparse(django_settings.AWS_S3_ENDPOINT_URL)
    assert endpoint.hostname in {"127.0.0.1", "localhost"}, "tests only talk to loopback"
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request
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
    """Give each test its own storages (tus staging is in `blobs`) and lock files: a var/ dir of its
    own, and on S3 a fresh prefix.

    Laid out as settings lays out FERRY_VAR_DIR and FERRY_S3_PREFIX, so processes started
    by a test (see `live_env`) see the same storages.
    """
    var_dir = tmp_path / "var"
    prefix = f"test-{uuid.uuid4().hex}/"
    configured = {}
    for alias, conf in settings.STORAGES.items():
        options = dict(conf.get("OPTIONS", {}))
        if "location" in options and "bucket_name" in options:
            options["location"] = f"{prefix}{options['location']}"
        elif "location" in options:
            options["location"] = str(var_dir / os.path.basename(options["location"]))
        configured[alias] = {**conf, "OPTIONS": options}
    settings.STORAGES = configured
    settings.VAR_DIR = var_dir  # the SQLite-mode purge lock lives here
    settings.FILE_UPLOAD_TEMP_DIR = str(var_dir / "tmp")
    os.makedirs(settings.FILE_UPLOAD_TEMP_DIR)
    return {"FERRY_VAR_DIR": str(var_dir), "FERRY_S3_PREFIX": prefix}


@pytest.fixture(autouse=True)
def isolated_cache(settings) -> dict:
    """A cache key prefix of each test's own, so that the API's throttle counts never
    carry over from one test (or run sharing a Redis) to another; `live_env` hands it on."""
    prefix = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    return {"CACHE_KEY_PREFIX": prefix}


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """Static files collected once per run, which servers with DEBUG off serve (WhiteNoise
    uses Django's finders only with DEBUG on), as a deployment does after collectstatic."""
    root = tmp_path_factory.mktemp("static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        env={**os.environ, "DJANGO_STATIC_ROOT": str(root)},
        cwd=ROOT,
        check=True,
    )
    return root


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
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(admin_user):
    """A superuser's admin session (the test client; CSRF not enforced)."""
    from django.test import Client

    client = Client()
    client.force_login(admin_user)
    return client


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


@contextmanager
def scratch_database(prefix: str):
    """None on the embedded default (SQLite lives in a var dir), or the URL of a PostgreSQL
    database made for a second Ferry process and dropped afterwards."""
    if not SERVICES:
        yield None
        return
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _postgres_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    without_waiting_for_the_disk(name)
    try:
        yield _postgres_url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_env(transactional_db, isolated_storages, isolated_cache, collected_static) -> dict:
    """Environment for processes that must share this test's database, storages and task
    queue. The queue starts empty: a task another test left on a broker that outlives it
    (Redis) never reaches the workers this test starts."""
    get_broker().purge_queue()
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
        "DJANGO_STATIC_ROOT": str(collected_static),
        **isolated_storages,
        **isolated_cache,
    }


def serve_asgi(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """uvicorn serving project.asgi in a process group of its own, on a loopback socket
    bound here and handed over (so no other process can take the port in between), and
    its base URL once it answers. Stop it with `stop_process`."""
    listener = socket.create_server(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with listener, log.open("a") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "project.asgi:application",
             "--fd", str(listener.fileno()), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            pass_fds=[listener.fileno()], start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: server.poll() is not None or _answers(base),
            timeout=30,
            what="uvicorn to answer",
            explain=log.read_text,
        )
        assert server.poll() is None, f"uvicorn exited {server.returncode}:\n{log.read_text()}"
    except BaseException:
        stop_process(server)
        raise
    return server, base


def _answers(base: str) -> bool:
    try:
        httpx.get(f"{base}/api/", timeout=patience(2))
    except httpx.TransportError:
        return False
    return True


@pytest.fixture
def asgi_server(live_env, tmp_path):
    """uvicorn on this test's database and storages, for tests about real HTTP."""
    server, base = serve_asgi(live_env, tmp_path / "uvicorn.log")
    try:
        yield base
    finally:
        stop_process(server)
