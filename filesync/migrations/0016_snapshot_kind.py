"""Snapshots get a kind: the ones users take, and the ones Ferry keeps while an export
reads a revision that an edit moved past (filesync.preserving)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('filesync', '0015_upload_crc32'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="snapshot",
            options={"default_manager_name": "objects", "ordering": ["-created_at", "id"]},
        ),
        migrations.AddField(
            model_name='snapshot',
            name='file_modified_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='snapshot',
            name='kind',
            field=models.CharField(choices=[('user', 'User'), ('preserved', 'Preserved')], default='user', max_length=10),
        ),
        migrations.AddIndex(
            model_name='snapshot',
            index=models.Index(condition=models.Q(('kind', 'preserved')), fields=['kind'], name='snapshot_preserved'),
        ),
        migrations.AddConstraint(
            model_name='snapshot',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['user', 'preserved'])), name='snapshot_kind_valid'),
        ),
    ]
