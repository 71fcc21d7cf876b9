"""The project's django-q2 schedules come from one idempotent post_migrate hook."""

from __future__ import annotations

from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from matching.tasks import PURGE_SCHEDULE, SWEEP_SCHEDULE

EXPECTED = {
    SWEEP_SCHEDULE: ("matching.tasks.stuck_requeue_task", Schedule.MINUTES),
    PURGE_SCHEDULE: ("matching.tasks.expired_attendee_data_purge_task", Schedule.DAILY),
}


def _schedules() -> list[tuple[str, str, str]]:
    return sorted(Schedule.objects.values_list("name", "func", "schedule_type"))


def test_after_migrate_each_schedule_exists_once(db):
    expected = sorted((name, func, kind) for name, (func, kind) in EXPECTED.items())
    assert _schedules() == expected  # made by the test database's own migrate
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    assert _schedules() == expected


def test_migrate_follows_the_sweep_setting_and_keeps_the_operators_purge_time(db, settings):
    later = timezone.now() + timedelta(hours=5)
    Schedule.objects.filter(name=PURGE_SCHEDULE).update(next_run=later)  # changed in the admin
    settings.Q_SWEEP_MINUTES = 7
    call_command("migrate", verbosity=0)
    assert Schedule.objects.get(name=SWEEP_SCHEDULE).minutes == 7
    assert Schedule.objects.get(name=PURGE_SCHEDULE).next_run == later


def test_a_database_missing_a_schedule_gets_it_back_at_migrate(db):
    Schedule.objects.all().delete()
    call_command("migrate", verbosity=0)
    assert sorted(Schedule.objects.values_list("name", flat=True)) == sorted(EXPECTED)
