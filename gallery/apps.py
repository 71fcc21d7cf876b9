from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Events and photos"

    def ready(self) -> None:
        from gallery import signals  # noqa: F401 - connects the deletion hooks

        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="gallery-organizers-group")


def _after_migrate(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    # After auth has made this app's permissions (its handler runs first): the
    # Organizers group gets those of new models (e.g. uploads) without anyone
    # having to remember it after an upgrade.
    if using == "default":
        from gallery import services

        services.organizers_group()
