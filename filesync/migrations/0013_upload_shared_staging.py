"""tus staging moves into the blobs storage, its state into the row. Unfinished uploads
staged the old way (a node-local file) cannot go on: they are dropped, and their clients,
answered 404, start again."""

from django.db import migrations, models


def drop_unfinished(apps, schema_editor):
    apps.get_model("filesync", "Upload").objects.filter(completed_at__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("filesync", "0012_blob_holders"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="holder",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddField(
            model_name="upload",
            name="multipart_id",
            field=models.CharField(blank=True, default="", max_length=1024),
        ),
        migrations.AddField(
            model_name="upload",
            name="next_part",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="upload",
            name="part_ceiling",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="upload",
            name="parts",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="upload",
            name="staged_name",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="upload",
            name="tail",
            field=models.BinaryField(blank=True, default=b""),
        ),
        migrations.RunPython(drop_unfinished, migrations.RunPython.noop),
    ]
