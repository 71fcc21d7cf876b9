from django.contrib import admin
from django.urls import include, path

from gallery import views as gallery_views

admin.site.site_header = "Trouvaille"
admin.site.site_title = "Trouvaille admin"
admin.site.index_title = "Events and photos"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", gallery_views.healthz, name="healthz"),
    path("", include("gallery.urls")),
]
