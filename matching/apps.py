from django.apps import AppConfig
from django.db.models.signals import post_migrate


def sweep_schedule_ensure(*, minutes: int | None = None, **kwargs: object) -> None:
    """The django-q2 schedule of the sweeper (matching.tasks.stuck_requeue_task), kept
    in step with Q_SWEEP_MINUTES at every `migrate`: nobody has to remember a cron line."""
    from django.conf import settings
    from django_q.models import Schedule

    from matching.tasks import SWEEP_SCHEDULE

    minutes = minutes or settings.Q_SWEEP_MINUTES
    Schedule.objects.update_or_create(
        name=SWEEP_SCHEDULE,
        defaults={
            "func": "matching.tasks.stuck_requeue_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )


class MatchingConfig(AppConfig):
    name = "matching"
    verbose_name = "Face matching"

    def ready(self) -> None:
        # After django_q's own tables exist: connected for every app's post_migrate,
        # acting once django_q's has run.
        post_migrate.connect(_after_migrate, dispatch_uid="matching-sweep-schedule")


def _after_migrate(sender: AppConfig, **kwargs: object) -> None:
    if sender.name == "django_q" and kwargs.get("using", "default") == "default":
        sweep_schedule_ensure()
