"""Who holds a blob's bytes becomes a table of its own (BlobHolder); the single
uploader column it replaces is copied into it first."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def copy_uploaders(apps, schema_editor):
    Blob = apps.get_model("filesync", "Blob")
    BlobHolder = apps.get_model("filesync", "BlobHolder")
    uploaded = Blob.objects.filter(created_by__isnull=False).values_list("pk", "created_by")
    BlobHolder.objects.bulk_create(
        [BlobHolder(blob_id=blob, user_id=user) for blob, user in uploaded.iterator()],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("filesync", "0011_data_version_2"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BlobHolder",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "blob",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="holders",
                        to="filesync.blob",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("blob", "user"), name="blob_holder_unique")
                ],
            },
        ),
        migrations.RunPython(copy_uploaders, migrations.RunPython.noop),
        migrations.RemoveField(model_name="blob", name="created_by"),
    ]
