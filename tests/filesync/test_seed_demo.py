import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command

from filesync.models import Blob, File, MediaObject, Page, Project, Team
from filesync.selectors import get_file

pytestmark = pytest.mark.django_db


def seed(*args) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines()[-1]


def workspace_digest(project_id: str) -> str:
    """A hash of every file's content, in a fixed order, ignoring timestamps."""
    digest = hashlib.sha256()
    for file in File.objects.filter(project_id=project_id).order_by("name"):
        state = get_file(file.id)
        digest.update(
            json.dumps(
                [str(file.id), state.name, state.assets, state.library_ids()],
                sort_keys=True,
                default=str,
            ).encode()
        )
        for page in state.pages():
            digest.update(json.dumps(page, sort_keys=True, default=str).encode())
        for media in state.media():
            digest.update(json.dumps(media, default=str).encode())
    return digest.hexdigest()


def test_seed_demo_builds_the_requested_workspace(owner, api_for, outsider):
    project_id = seed(
        "--files",
        "50",
        "--pages",
        "5",
        "--objects",
        "200",
        "--media-mb",
        "20",
        "--libraries",
        "2",
        "--owner",
        owner.username,
    )
    project = Project.objects.get(pk=project_id)
    files = File.objects.filter(project=project)
    assert files.filter(is_library=True).count() == 2
    assert files.filter(is_library=False).count() == 50
    assert Page.objects.filter(file__project=project, file__is_library=False).count() == 250
    assert MediaObject.objects.count() == 100
    assert 19.9 * 2**20 < sum(Blob.objects.values_list("size", flat=True)) <= 20 * 2**20
    page = Page.objects.filter(file__is_library=False).first()
    assert len(page.object_map) == 200
    kinds = {key for obj in page.object_map.values() for key in obj}
    assert {"fill_color_ref", "typography_ref", "image", "component_file"} <= kinds

    listed = api_for(owner).get(f"/api/files/?project={project_id}").json()
    assert listed["count"] == 52
    assert api_for(outsider).get(f"/api/files/?project={project_id}").json()["count"] == 0
    any_file = files.first()
    assert api_for(outsider).get(f"/api/files/{any_file.id}/").status_code == 404


def test_seed_demo_is_deterministic_for_a_seed():
    args = ["--files", "3", "--pages", "2", "--objects", "20", "--media-mb", "0.1", "--seed", "7"]
    first_id = seed(*args)
    first = workspace_digest(first_id)
    assert seed(*args) == first_id
    assert File.objects.count() == 4

    Team.objects.all().delete()
    MediaObject.objects.all().delete()
    Blob.objects.all().delete()
    assert seed(*args) == first_id
    assert workspace_digest(first_id) == first
    assert seed(*args[:-1], "8") != first_id


def test_seed_demo_refuses_bad_arguments():
    with pytest.raises(CommandError, match="--files must not be negative"):
        seed("--files", "-1")
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        seed("--owner", "ghost")
    assert not Project.objects.exists()
