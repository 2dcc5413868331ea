"""tus uploads keep a running CRC-32 beside their running sha256, for the blob they make.
Uploads under way keep null: their blobs get a CRC on first use."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("filesync", "0014_blob_crc32"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="crc32",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
    ]
