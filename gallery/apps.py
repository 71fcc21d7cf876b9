from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Events and photos"

    def ready(self) -> None:
        from gallery import signals  # noqa: F401 - connects the deletion hooks
