from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy

from gallery import views as gallery_views

admin.site.site_header = "Trouvaille"
admin.site.site_title = "Trouvaille admin"
admin.site.index_title = "Events and photos"
# The sidebar repeats the index's few links and takes 300 px the photo and event lists need at 1280 px.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    # The one-time link create_organizer prints: the organizer chooses a password and is signed in.
    path(
        "admin/welcome/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            post_reset_login=True,
            # Named: with django-axes' backend first, Django cannot pick the one to log in with.
            post_reset_login_backend="django.contrib.auth.backends.ModelBackend",
            success_url=reverse_lazy("admin:index"),
        ),
        name="organizer_welcome",
    ),
    path("admin/", admin.site.urls),
    path("healthz", gallery_views.healthz, name="healthz"),
    # The language switcher posts here (Django's set_language): remembered in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("gallery.urls")),
]

handler400 = "gallery.views.bad_request"
