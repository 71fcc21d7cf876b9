"""Once made the daily purge's django-q2 schedule; now a no-op.

Every schedule is ensured by one post_migrate hook (matching.apps.schedules_ensure),
which finds the schedule this migration made in older databases by its name, and
makes it in new ones. Kept, empty, because later migrations depend on it.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0009_organizer"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
