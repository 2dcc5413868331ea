"""Pages get a file-local `page_id` (kept by import and duplicate); existing pages keep
their id as it was known to clients."""

import uuid

from django.db import migrations, models
from django.db.models import F


def copy_ids(apps, schema_editor):
    apps.get_model("filesync", "Page").objects.update(page_id=F("id"))


class Migration(migrations.Migration):
    dependencies = [("filesync", "0009_upload_hash_state")]

    operations = [
        migrations.AddField(
            model_name="page", name="page_id", field=models.UUIDField(null=True)
        ),
        migrations.RunPython(copy_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="page", name="page_id", field=models.UUIDField(default=uuid.uuid4)
        ),
        migrations.AddConstraint(
            model_name="page",
            constraint=models.UniqueConstraint(
                fields=("file", "page_id"), name="page_unique_file_page_id"
            ),
        ),
    ]
