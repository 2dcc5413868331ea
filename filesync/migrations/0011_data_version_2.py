"""Data version 2 (geometry `w`/`h` renamed `width`/`height`): rows of an older version are
upgraded through filesync.datamigrations, the same functions an import uses, so the store
holds only the current data version."""

from django.db import migrations, models

#: Pages per query: their objects are the bulk of a file, so memory stays bounded.
BATCH = 100


def _upgrade_pages(pages, owner_version: str) -> None:
    """Walk the pages by keyset (no open cursor while writing, no OFFSET) and write back
    the ones the upgrade changed."""
    from filesync.datamigrations import upgrade_objects

    Model, last = pages.model, None
    while True:
        batch = pages.order_by("pk") if last is None else pages.filter(pk__gt=last).order_by("pk")
        rows = list(batch.values_list("pk", "object_map", owner_version)[:BATCH])
        if not rows:
            return
        changed = []
        for pk, objects, version in rows:
            upgraded = upgrade_objects(objects, version)
            if upgraded != objects:
                changed.append(Model(pk=pk, object_map=upgraded))
        Model.objects.bulk_update(changed, ["object_map"])
        last = rows[-1][0]


def _upgrade_owners(owners) -> None:
    """Files or snapshots: assets upgraded, and the version they now hold."""
    from filesync.datamigrations import upgrade_assets
    from filesync.models import DATA_VERSION

    Model, last = owners.model, None
    while True:
        batch = owners.order_by("pk") if last is None else owners.filter(pk__gt=last).order_by("pk")
        rows = list(batch.values_list("pk", "assets", "data_version")[:BATCH])
        if not rows:
            return
        for pk, assets, version in rows:
            Model.objects.filter(pk=pk).update(
                assets=upgrade_assets(assets, version), data_version=DATA_VERSION
            )
        last = rows[-1][0]


def upgrade(apps, schema_editor):
    # The functions upgrade to the current DATA_VERSION, so rows are marked with it (not a
    # fixed 2): a later data migration then finds only what is still older than its own.
    from filesync.models import DATA_VERSION

    for owner, page, link in (("File", "Page", "file"), ("Snapshot", "SnapshotPage", "snapshot")):
        Owner, Page = apps.get_model("filesync", owner), apps.get_model("filesync", page)
        old = {f"{link}__data_version__lt": DATA_VERSION}
        # Pages first: they are found through their owner's version, which changes last.
        _upgrade_pages(Page.objects.filter(**old), f"{link}__data_version")
        _upgrade_owners(Owner.objects.filter(data_version__lt=DATA_VERSION))


class Migration(migrations.Migration):
    dependencies = [("filesync", "0010_page_local_id")]

    operations = [
        migrations.AlterField(
            model_name="file",
            name="data_version",
            field=models.PositiveSmallIntegerField(default=2),
        ),
        migrations.RunPython(upgrade, migrations.RunPython.noop),
    ]
