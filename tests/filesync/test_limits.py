"""Bounded JSON (common/limits.py): hostile bodies on every JSON route are refused before
they can hurt, and the store takes only content its own readers can serve."""

import json

import pytest
from django.core.exceptions import ValidationError

from common import limits
from exports import services as export_services
from exports.models import JobState
from filesync import services
from filesync.sync.services import register_replica
from tests.exports.conftest import read_archive, run_to_end
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db


def nested(depth: int, inner=None):
    """A value of exactly `depth` containers: lists inside lists, `inner` innermost."""
    value = [] if inner is None else [inner]
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    """JSON nested `depth` deep, written out directly (json.dumps would recurse)."""
    return "[" * depth + "]" * depth


def test_depth_counts_containers():
    assert not limits.deeper_than(1, 0)
    assert limits.deeper_than([], 0) and not limits.deeper_than([], 1)
    assert limits.deeper_than({"a": [1]}, 1) and not limits.deeper_than({"a": [1]}, 2)
    assert limits.deeper_than(nested(65), 64) and not limits.deeper_than(nested(64), 64)
    assert limits.deeper_than(json.loads(deep_text(900)), 64)


#: Every route that reads a JSON body, with the ids it needs filled in from `targets`.
JSON_ROUTES = [
    ("post", "/api/teams/"),
    ("post", "/api/projects/"),
    ("post", "/api/projects/{project}/duplicate/"),
    ("post", "/api/files/"),
    ("patch", "/api/files/{file}/"),
    ("post", "/api/files/{file}/libraries/"),
    ("post", "/api/files/{file}/duplicate/"),
    ("post", "/api/files/{file}/pages/"),
    ("post", "/api/files/{file}/media/"),
    ("post", "/api/files/{file}/snapshots/"),
    ("post", "/api/files/{file}/snapshots/{snapshot}/restore/"),
    ("post", "/api/exports/"),
    ("post", "/api/imports/"),
    ("post", "/api/sync/replicas"),
    ("post", "/api/sync/replicas/{replica}/ack"),
]


def page_body(objects: str) -> str:
    return '{"name": "x", "objects": ' + objects + "}"


#: Each hostile body, and the status it must get.
HOSTILE_BODIES = {
    "depth-100000": (page_body(deep_text(100_000)), 400),
    "depth-300": (page_body(deep_text(300)), 400),
    "20-MB": (page_body('{"t": {"type": "text", "s": "' + "x" * 20 * 2**20 + '"}}'), 413),
}


@pytest.fixture
def targets(owner, project, design) -> dict:
    snapshot = services.create_snapshot(file=design, label="before")
    replica = register_replica(owner=owner, name="mirror")
    return {
        "project": project.id,
        "file": design.id,
        "snapshot": snapshot.id,
        "replica": replica.id,
    }


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=list(HOSTILE_BODIES))
@pytest.mark.parametrize("method, route", JSON_ROUTES)
def test_hostile_bodies_are_refused_on_every_json_route(
    api_for, owner, targets, method, route, body
):
    text, status = HOSTILE_BODIES[body]
    client = api_for(owner)
    before = store_state()
    response = getattr(client, method)(
        route.format(**targets), text, content_type="application/json"
    )
    assert response.status_code == status, response.content[:300]
    assert "detail" in response.json()
    assert store_state() == before


def test_a_page_over_the_object_limit_is_400_naming_objects(api_for, editor, design):
    objects = {f"o{n}": {"type": "rect"} for n in range(limits.PAGE_MAX_OBJECTS + 1)}
    client = api_for(editor)
    before = store_state()
    response = client.post(
        f"/api/files/{design.id}/pages/", {"name": "p", "objects": objects}, format="json"
    )
    assert response.status_code == 400
    assert "at most" in response.json()["objects"][0]
    assert store_state() == before


def test_a_page_or_assets_over_the_byte_limit_is_400_naming_the_field(
    api_for, editor, design, settings
):
    settings.PAGE_MAX_BYTES = 1000
    big = {"t": {"type": "text", "content": "x" * 1000}}
    client = api_for(editor)
    before = store_state()
    page = client.post(
        f"/api/files/{design.id}/pages/", {"name": "p", "objects": big}, format="json"
    )
    assets = client.patch(
        f"/api/files/{design.id}/", {"assets": {"components": big}}, format="json"
    )
    assert page.status_code == assets.status_code == 400
    assert "at most 1000" in page.json()["objects"][0]
    assert "at most 1000" in assets.json()["assets"][0]
    assert store_state() == before


def test_content_one_level_too_deep_is_refused_by_the_services(design):
    """What the API's parser stops first is refused by the services too (admin, import)."""
    deep = {"t": {"type": "group", "children": nested(limits.MAX_JSON_DEPTH - 1)}}
    before = store_state()
    with pytest.raises(ValidationError) as page:
        services.add_page(file=design, name="p", objects=deep)
    with pytest.raises(ValidationError) as assets:
        services.update_file(file=design, assets={"components": deep})
    with pytest.raises(ValidationError) as huge_number:
        services.add_page(file=design, name="p", objects={"t": {"type": "rect", "x": 2**70}})
    assert "Nested deeper than 64" in page.value.message_dict["objects"][0]
    assert "Nested deeper than 64" in assets.value.message_dict["assets"][0]
    assert "objects" in huge_number.value.message_dict
    assert store_state() == before


@pytest.mark.django_db(transaction=True)
def test_a_page_at_the_depth_limit_is_stored_exported_and_read_whole(api_for, editor, design):
    """The deepest page the API takes is one every reader of the store can serve."""
    objects = {"t": {"type": "group", "children": nested(limits.MAX_JSON_DEPTH - 2, 7)}}
    assert not limits.deeper_than(objects, limits.MAX_JSON_DEPTH)
    assert limits.deeper_than(objects, limits.MAX_JSON_DEPTH - 1)
    client = api_for(editor)
    created = client.post(
        f"/api/files/{design.id}/pages/", {"name": "deep", "objects": objects}, format="json"
    )
    assert created.status_code == 201, created.content
    page_id = created.json()["id"]

    job = run_to_end(export_services.create_export_job(enqueue=False, file_ids=[design.id]))
    assert job.state == JobState.SUCCEEDED, job.error_message
    _, archive = read_archive(job)
    exported = json.loads(archive.read(f"files/{design.id}/pages/{page_id}.json"))
    assert exported["objects"] == objects

    whole = client.get(f"/api/sync/files/{design.id}")
    assert whole.status_code == 200
    lines = [json.loads(line) for line in b"".join(whole.streaming_content).splitlines()]
    assert [line["page"]["objects"] for line in lines if "page" in line] == [objects]

    deeper = {"t": {"type": "group", "children": nested(limits.MAX_JSON_DEPTH - 1, 7)}}
    before = store_state()
    refused = client.post(
        f"/api/files/{design.id}/pages/", {"name": "deeper", "objects": deeper}, format="json"
    )
    assert refused.status_code == 400
    assert store_state() == before


@pytest.mark.parametrize(
    "value",
    [
        1,
        [],
        {"a": [1]},
        nested(64),
        nested(65),
        {"s": "[[[{{", "t": ["]]]", {"u": '\\"[{'}]},
        ["\\", [["{"], "\\\\\\"]],
        {"a": "", "b": ['"[', [""]], "c": {"d": "]]"}},
    ],
)
@pytest.mark.parametrize("limit", [0, 1, 2, 3, 64])
def test_text_depth_agrees_with_the_parsed_depth(value, limit):
    """Brackets inside strings, escaped quotes and backslashes do not count."""
    text = json.dumps(value).encode()
    assert limits.text_deeper_than(text, limit) == limits.deeper_than(value, limit)
