from django.urls import path

from gallery import views

app_name = "gallery"

urlpatterns = [
    path("", views.home, name="home"),
    path("e/<slug:slug>/", views.event, name="event"),
    path("e/<slug:slug>/theme.css", views.event_theme, name="event_theme"),
    path("e/<slug:slug>/cover.jpg", views.event_cover, name="event_cover"),
    path("e/<slug:slug>/privacy", views.privacy, name="privacy"),
    path("e/<slug:slug>/selfie", views.selfie_upload, name="selfie_upload"),
    path("e/<slug:slug>/opt-out/", views.optout, name="optout"),
    path("e/<slug:slug>/opt-out/<str:token>/", views.optout_link, name="optout_link"),
    path("e/<slug:slug>/me/", views.me, name="me"),
    path("e/<slug:slug>/me/status", views.me_status, name="me_status"),
    path("e/<slug:slug>/me/forget", views.me_forget, name="me_forget"),
    path("e/<slug:slug>/me/photos.zip", views.photos_zip, name="photos_zip"),
    path("e/<slug:slug>/me/email", views.me_email, name="me_email"),
    path("e/<slug:slug>/me/email/stop", views.me_email_stop, name="me_email_stop"),
    path("e/<slug:slug>/unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("e/<slug:slug>/me/<str:token>/", views.me_resume, name="me_resume"),
    path("e/<slug:slug>/photos/<int:photo_id>/thumbnail.jpg", views.photo_thumbnail, name="photo_thumbnail"),
    path("e/<slug:slug>/photos/<int:photo_id>/", views.photo_view, name="photo_view"),
    path("e/<slug:slug>/photos/<int:photo_id>/photo.jpg", views.photo_image, name="photo_image"),
    path("e/<slug:slug>/photos/<int:photo_id>/download", views.photo_download, name="photo_download"),
    path("e/<slug:slug>/photos/<int:photo_id>/not-me", views.photo_reject, name="photo_reject"),
    path("e/<slug:slug>/photos/<int:photo_id>/undo", views.photo_undo, name="photo_undo"),
]
