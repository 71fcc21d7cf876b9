import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Separate from 0002: PostgreSQL refuses to alter a table with pending
    # (deferred) foreign key checks from the data migration's updates.
    dependencies = [
        ("gallery", "0002_attendee"),
    ]

    operations = [
        migrations.AlterField(
            model_name="selfie",
            name="attendee",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="selfies", to="gallery.attendee"
            ),
        ),
        migrations.RemoveField(
            model_name="selfie",
            name="token",
        ),
    ]
