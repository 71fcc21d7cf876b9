from django.apps import AppConfig
from django.db.models.signals import post_migrate


def schedules_ensure(*, sweep_minutes: int | None = None, **kwargs: object) -> None:
    """Every django-q2 schedule of the project, ensured at every `migrate`: one row each,
    by name, however often it runs, so nobody has to remember a cron line.

    Here rather than in a data migration: a migration runs once, so a schedule added or
    changed later would need another; this runs on every deploy's `migrate`.
    """
    from django.conf import settings
    from django_q.models import Schedule

    from matching.tasks import PURGE_SCHEDULE, SWEEP_SCHEDULE

    # The sweeper follows Q_SWEEP_MINUTES: brought in step at each migrate.
    Schedule.objects.update_or_create(
        name=SWEEP_SCHEDULE,
        defaults={
            "func": "matching.tasks.stuck_requeue_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": sweep_minutes or settings.Q_SWEEP_MINUTES,
            "repeats": -1,
        },
    )
    # The daily purge: made once; its time is the operator's to change in the admin
    # (Scheduled tasks), and is never overwritten. Databases made before this hook got
    # it, under the same name, from migration gallery 0010.
    Schedule.objects.get_or_create(
        name=PURGE_SCHEDULE,
        defaults={
            "func": "matching.tasks.expired_attendee_data_purge_task",
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )


class MatchingConfig(AppConfig):
    name = "matching"
    verbose_name = "Face matching"

    def ready(self) -> None:
        # After django_q's own tables exist: connected for every app's post_migrate,
        # acting once django_q's has run.
        post_migrate.connect(_after_migrate, dispatch_uid="matching-schedules")


def _after_migrate(sender: AppConfig, **kwargs: object) -> None:
    if sender.name == "django_q" and kwargs.get("using", "default") == "default":
        schedules_ensure()
