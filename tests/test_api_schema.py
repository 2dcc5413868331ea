"""Schemathesis over every operation of /api/schema/, against a live uvicorn, with all checks.

Run through its CLI (`st run`): the pytest plugin's fixture-loaded schemas do not work
with this pytest. tests/schemathesis.toml holds the configuration: auth, the real ids
path parameters take, and any check an operation is excused from, with the reason.
"""

import io
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from exports import services as export_services
from filesync import services
from filesync.sync import services as sync_services
from filesync.sync import uploads
from tests.conftest import ROOT
from tests.waiting import patience

#: Hypothesis examples per operation and generation mode in the fuzzing phase (the
#: coverage phase's boundary cases come on top): few enough for a loaded 2-core machine
#: (2 to 3 minutes).
EXAMPLES = 3


@pytest.fixture
def fuzzed_workspace(make_user) -> dict[str, str]:
    """A user owning a team with a project, a file with a page, media, a snapshot and a
    linked library, a lock, a replica, an upload and an export job; as the variables
    tests/schemathesis.toml reads."""
    user = make_user("schemathesis")
    team = services.create_team(name="Fuzzed", owner=user)
    project = services.create_project(team=team, name="Fuzzed project")
    library = services.create_file(project=project, name="Library", is_library=True)
    design = services.create_file(project=project, name="Design")
    services.link_library(file=design, library=library)
    page = services.add_page(file=design, name="Page", objects={"r": {"type": "rect"}})
    media = services.add_media(
        file=design,
        name="hero.png",
        stream=io.BytesIO(b"\x89PNG\r\n\x1a\n" + os.urandom(1024)),
        content_type="image/png",
    )
    ids = {
        "TOKEN": Token.objects.create(user=user).key,
        "TEAM_ID": team.pk,
        "PROJECT_ID": project.pk,
        "FILE_ID": design.pk,
        "PAGE_ID": page.page_id,
        "LIBRARY_ID": library.pk,
        "MEDIA_ID": media.pk,
        "SHA256": media.blob_id,
        "SNAPSHOT_ID": services.create_snapshot(file=design, user=user).pk,
        "EXPORT_ID": export_services.create_export_job(user=user, file_ids=[design.pk]).pk,
        "LOCK_ID": sync_services.take_lock(blob=media.blob, holder=user).pk,
        "REPLICA_ID": sync_services.register_replica(owner=user, name="mirror").pk,
        "UPLOAD_ID": uploads.create_upload(owner=user, length=10, sha256="0" * 64, metadata={}).pk,
    }
    return {f"FERRY_{name}": str(value) for name, value in ids.items()}


#: A budget, not a timeout: a slower machine fuzzes fewer cases, it does not wait longer.
FUZZING_SECONDS = 90


@pytest.mark.live
@pytest.mark.timeout(300)
def test_every_operation_meets_its_schema_and_never_answers_5xx(
    asgi_server, fuzzed_workspace, tmp_path
):
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli",
         "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{asgi_server}/api/schema/",
         "--phases", "examples,coverage,fuzzing",
         "--max-examples", str(EXAMPLES),
         "--generation-deterministic",
         "--workers", "1",
         "--request-timeout", str(patience(20)),
         "--max-time", str(FUZZING_SECONDS),
         "--no-color"],
        env={**os.environ, **fuzzed_workspace, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path, capture_output=True, text=True, timeout=patience(260),
    )  # fmt: skip
    print(run.stdout)  # phases, durations, cases generated: less when --max-time cut it
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"


def test_the_schema_generates_without_errors_or_warnings(tmp_path):
    """drf-spectacular falls back silently (an operation left out, a guessed body) where it
    cannot read a view; each fallback is a warning or an error, and fails this."""
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )
