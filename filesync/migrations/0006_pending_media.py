import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


def copy_blob_ids(apps, schema_editor):
    MediaObject = apps.get_model("filesync", "MediaObject")
    MediaObject.objects.update(sha256=models.F("blob_id"))


class Migration(migrations.Migration):
    dependencies = [("filesync", "0005_purge_schedule")]

    operations = [
        migrations.AddField(
            model_name="mediaobject",
            name="sha256",
            field=models.CharField(
                db_index=True,
                default="",
                max_length=64,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[0-9a-f]{64}$", "A sha256 is 64 lowercase hex digits."
                    )
                ],
            ),
            preserve_default=False,
        ),
        migrations.RunPython(copy_blob_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="mediaobject",
            name="blob",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="media",
                to="filesync.blob",
            ),
        ),
        migrations.AddConstraint(
            model_name="mediaobject",
            constraint=models.CheckConstraint(
                condition=models.Q(("blob__isnull", True), ("blob", models.F("sha256")), _connector="OR"),
                name="media_blob_is_its_sha256",
            ),
        ),
    ]
