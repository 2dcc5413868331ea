"""Blobs record their CRC-32, so a binfile v2 local header needs no read pass. Older blobs
keep null until an export computes it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("filesync", "0013_upload_shared_staging"),
    ]

    operations = [
        migrations.AddField(
            model_name="blob",
            name="crc32",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name="blob",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("crc32__isnull", True), ("crc32__lte", 4294967295), _connector="OR"
                ),
                name="blob_crc32_is_32_bits",
            ),
        ),
    ]
