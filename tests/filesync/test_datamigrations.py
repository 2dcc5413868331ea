"""Data-version upgrades: the registry's steps, and migration 0011 that runs them over rows."""

import copy

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from filesync.datamigrations import STEPS, UnknownDataVersion, upgrade_assets, upgrade_objects
from filesync.models import DATA_VERSION, File, Snapshot

V1_OBJECTS = {
    "a": {"type": "rect", "x": 1, "y": 2, "w": 30, "h": 40, "fill_color_ref": {"file": "f"}},
    "b": {"type": "text", "content": "no geometry"},
    "c": {"type": "rect", "w": 5, "width": 7, "h": 6},
}


def test_v1_objects_get_width_and_height():
    given = copy.deepcopy(V1_OBJECTS)

    upgraded = upgrade_objects(given, 1)

    assert upgraded == {
        "a": {
            "type": "rect",
            "x": 1,
            "y": 2,
            "width": 30,
            "height": 40,
            "fill_color_ref": {"file": "f"},
        },
        "b": {"type": "text", "content": "no geometry"},
        # It has a width already, so it is not a version 1 object: left as it is.
        "c": {"type": "rect", "w": 5, "width": 7, "h": 6},
    }
    assert given == V1_OBJECTS


def test_v1_component_objects_get_width_and_height():
    assets = {
        "components": {
            "btn": {"name": "Button", "objects": {"root": {"type": "rect", "w": 80, "h": 24}}},
            "bare": {"name": "No objects"},
        },
        "colors": {"red": {"name": "Red", "color": "#ff0000", "w": 1}},
        "typographies": {},
    }
    given = copy.deepcopy(assets)

    upgraded = upgrade_assets(given, 1)

    assert upgraded["components"] == {
        "btn": {"name": "Button", "objects": {"root": {"type": "rect", "width": 80, "height": 24}}},
        "bare": {"name": "No objects"},
    }
    assert upgraded["colors"] == assets["colors"]
    assert given == assets


def test_the_current_version_is_left_as_it_is():
    assets = {"components": {"btn": {"objects": {"root": {"w": 1}}}}, "colors": {}}

    assert upgrade_objects(V1_OBJECTS, DATA_VERSION) is V1_OBJECTS
    assert upgrade_assets(assets, DATA_VERSION) is assets


@pytest.mark.parametrize("version", [0, -1, DATA_VERSION + 1])
def test_an_unknown_version_is_refused(version):
    with pytest.raises(UnknownDataVersion):
        upgrade_objects({}, version)
    with pytest.raises(UnknownDataVersion):
        upgrade_assets({}, version)


def test_a_missing_step_is_refused(monkeypatch):
    monkeypatch.delitem(STEPS, 1)

    with pytest.raises(UnknownDataVersion, match="No upgrade from data version 1"):
        upgrade_objects({}, 1)


def test_every_older_version_has_a_step():
    assert sorted(STEPS) == list(range(1, DATA_VERSION))


BEFORE = [("filesync", "0010_page_local_id")]
AFTER = [("filesync", "0011_data_version_2")]


@pytest.mark.django_db(transaction=True)
def test_migration_0011_upgrades_version_1_rows(project, design):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        apps = executor.loader.project_state(BEFORE).apps
        HFile = apps.get_model("filesync", "File")
        HPage = apps.get_model("filesync", "Page")
        HSnapshot = apps.get_model("filesync", "Snapshot")
        HSnapshotPage = apps.get_model("filesync", "SnapshotPage")
        components = {"btn": {"name": "Button", "objects": {"root": {"w": 8, "h": 9}}}}
        old = HFile.objects.create(
            project_id=project.pk,
            name="Old",
            data_version=1,
            assets={"components": components, "colors": {}, "typographies": {}},
        )
        HPage.objects.create(file=old, index=0, name="P", object_map=V1_OBJECTS)
        snapshot = HSnapshot.objects.create(
            file=old, revision=1, name="Old", data_version=1, assets={"components": components}
        )
        HSnapshotPage.objects.create(
            snapshot=snapshot, page_id=old.pk, index=0, name="P", object_map=V1_OBJECTS
        )
        # Already at version 2: a "w" here is not a version 1 width and is left alone.
        HPage.objects.create(file_id=design.pk, index=0, name="Q", object_map={"o": {"w": 1}})

        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    expected = upgrade_objects(V1_OBJECTS, 1)
    file = File.objects.get(pk=old.pk)
    assert file.data_version == DATA_VERSION
    assert file.assets["components"]["btn"]["objects"] == {"root": {"width": 8, "height": 9}}
    assert file.pages.get().object_map == expected
    frozen = Snapshot.objects.get(pk=snapshot.pk)
    assert frozen.data_version == DATA_VERSION
    assert frozen.assets["components"]["btn"]["objects"] == {"root": {"width": 8, "height": 9}}
    assert frozen.pages.get().object_map == expected
    assert design.pages.get().object_map == {"o": {"w": 1}}
