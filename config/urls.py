from django.contrib import admin
from django.urls import include, path

from gallery import views as gallery_views

admin.site.site_header = "Trouvaille"
admin.site.site_title = "Trouvaille admin"
admin.site.index_title = "Events and photos"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", gallery_views.healthz, name="healthz"),
    # The language switcher posts here (Django's set_language): remembered in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("gallery.urls")),
]

handler400 = "gallery.views.bad_request"
