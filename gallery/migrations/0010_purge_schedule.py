"""The daily job that deletes attendee data past each event's retention period.

A migration, not AppConfig.ready(): ready() runs in every process (web workers,
commands, tests) before the database may even exist, and Django advises against
queries there; a migration runs once per database, on deploy, and `migrate` is
already part of every deploy. Operators can change the time in the admin
(django-q2's Scheduled tasks); this never overwrites an existing schedule.
"""

from django.db import migrations

NAME = "Purge expired attendee data"
FUNC = "matching.tasks.expired_attendee_data_purge_task"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(name=NAME, defaults={"func": FUNC, "schedule_type": "D", "repeats": -1})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME, func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0009_organizer"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
