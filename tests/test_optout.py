"""Opt-out ("don't show me"), issue #13: real dlib on the shared faces.

Obama opts out with a photo of his that is not indexed (obama4.jpg). A "searcher"
then takes a selfie of Obama (another photo of him, obama2.jpg): they must find
nothing. Biden, an attendee, keeps his group photos, with Obama blurred in every
copy served: checked by running dlib on the bytes the views send.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from gallery import services
from gallery.models import Attendee, Face, Match, Photo, Selfie
from matching.engines import get_engine
from tests.conftest import BIDEN_SELFIE, sample, sample_upload, upload

pytestmark = [pytest.mark.django_db, pytest.mark.dlib]

OPTOUT = "people/obama/obama4.jpg"
SEARCHER_SELFIE = "people/obama/obama2.jpg"
# Obama with Biden (and a child); Obama alone.
GROUP = "groups/obama_and_biden.jpg"
ALONE = "people/obama/obama.jpg"
LATER = "groups/two_people.jpg"  # Obama and Biden, imported after the opt-out


def _selfie(client: Client, event, relative: str) -> Selfie:
    response = client.post(
        reverse("gallery:selfie_upload", args=[event.slug]), {"image": sample_upload(relative), "consent": "on"}
    )
    assert response.status_code == 302, response.content
    return Selfie.objects.get(attendee__token=client.session[f"selfie:{event.pk}"])


def _gallery(selfie: Selfie) -> set[str]:
    return set(selfie.attendee.photos().values_list("original_name", flat=True))


def _body(response) -> bytes:
    assert response.status_code == 200, response.status_code
    return b"".join(response.streaming_content) if response.streaming else response.content


def _nearest(data: bytes, probe: np.ndarray) -> float:
    """The distance from probe to the nearest face dlib finds in these image bytes (inf if none)."""
    faces = get_engine("dlib").detect(Image.open(io.BytesIO(data)).convert("RGB"))
    return min((float(np.linalg.norm(face.embedding - probe)) for face in faces), default=float("inf"))


def _import(event, *relatives: str) -> None:
    services.paths_import(event=event, paths=[sample(relative) for relative in relatives])


def test_optout_hides_a_person_everywhere_and_withdrawing_shows_them_again(
    dlib_engine, event, run_jobs, settings
) -> None:
    tolerance = settings.FACE_TOLERANCE
    with run_jobs():
        _import(event, GROUP, ALONE)
    biden, searcher = Client(), Client()
    with run_jobs():
        biden_selfie = _selfie(biden, event, str(BIDEN_SELFIE.relative_to(BIDEN_SELFIE.parents[2])))
        searcher_selfie = _selfie(searcher, event, SEARCHER_SELFIE)
    assert _gallery(searcher_selfie) == {"obama_and_biden.jpg", "obama.jpg"}  # before: the searcher finds him
    assert _gallery(biden_selfie) == {"obama_and_biden.jpg"}

    # Obama opts out from the event page, on his phone.
    obama = Client()
    with run_jobs():
        response = obama.post(
            reverse("gallery:optout", args=[event.slug]), {"image": sample_upload(OPTOUT), "consent": "on"}
        )
    assert response.status_code == 302
    optout = Attendee.objects.get(opted_out=True)
    assert response["Location"] == reverse("gallery:optout_link", args=[event.slug, optout.token])
    template = optout.selfies.get().vector()
    assert optout.selfies.get().match_state == Selfie.State.DONE
    assert not Match.objects.filter(selfie__attendee=optout).exists()  # it finds nothing, for nobody

    # At once: the searcher finds nothing; Biden keeps the group photo; the photo
    # where Obama is alone is in nobody's gallery.
    assert _gallery(searcher_selfie) == set()
    assert _gallery(biden_selfie) == {"obama_and_biden.jpg"}
    alone = Photo.objects.get(original_name="obama.jpg")
    assert not Match.objects.filter(photo=alone).exists()
    for client in (searcher, biden):
        assert client.get(reverse("gallery:photo_image", args=[event.slug, alone.pk])).status_code == 404
    # The admin's marks: Obama's face in each photo, nobody else's.
    assert set(Face.objects.filter(opted_out=True).values_list("photo__original_name", flat=True)) == {
        "obama_and_biden.jpg",
        "obama.jpg",
    }
    assert Face.objects.filter(opted_out=True).count() == 2

    # Every copy Biden receives: Obama's face is gone, Biden's is still his.
    group = Photo.objects.get(original_name="obama_and_biden.jpg")
    biden_selfie.refresh_from_db()
    biden_probe = biden_selfie.vector()
    original = sample(GROUP).read_bytes()
    assert _nearest(original, template) <= tolerance  # the test can fail: he is in the original
    served = {
        name: _body(biden.get(reverse(f"gallery:{name}", args=[event.slug, group.pk])))
        for name in ("photo_image", "photo_download")
    }
    with zipfile.ZipFile(io.BytesIO(_body(biden.get(reverse("gallery:photos_zip", args=[event.slug]))))) as archive:
        served["zip"] = archive.read(archive.namelist()[0])
    for name, data in served.items():
        assert _nearest(data, template) > tolerance, name
        assert _nearest(data, biden_probe) <= tolerance, name
    thumbnail = _body(biden.get(reverse("gallery:photo_thumbnail", args=[event.slug, group.pk])))
    assert _nearest(thumbnail, template) > tolerance
    with group.original.open("rb") as stored:
        assert stored.read() == original  # the original is untouched

    # A photo imported later: Biden gets it, with Obama blurred; the searcher does not.
    with run_jobs():
        _import(event, LATER)
    later = Photo.objects.get(original_name="two_people.jpg")
    assert _gallery(biden_selfie) == {"obama_and_biden.jpg", "two_people.jpg"}
    assert _gallery(searcher_selfie) == set()
    assert _nearest(_body(biden.get(reverse("gallery:photo_image", args=[event.slug, later.pk]))), template) > tolerance

    # Re-matching everyone keeps it so.
    with run_jobs():
        services.event_rematch(event=event)
    assert _gallery(searcher_selfie) == set()
    assert _gallery(biden_selfie) == {"obama_and_biden.jpg", "two_people.jpg"}

    # Withdrawn with its private link: Obama is shown (and found) again.
    link = reverse("gallery:optout_link", args=[event.slug, optout.token])
    assert Client().get(link).status_code == 200
    with run_jobs():
        assert Client().post(link).status_code == 200
    assert not Attendee.objects.filter(opted_out=True).exists()
    assert not Face.objects.filter(opted_out=True).exists()
    assert _gallery(searcher_selfie) == {"obama_and_biden.jpg", "obama.jpg", "two_people.jpg"}
    group.refresh_from_db()
    assert (
        _nearest(_body(biden.get(reverse("gallery:photo_image", args=[event.slug, group.pk]))), template) <= tolerance
    )


def test_an_optout_link_opens_no_gallery_and_a_gallery_link_withdraws_nothing(dlib_engine, event, run_jobs) -> None:
    with run_jobs():
        _import(event, GROUP)
        optout = services.optout_create(event=event, upload=sample_upload(OPTOUT), consent=True)
        biden = services.selfie_create(event=event, upload=sample_upload("people/biden/biden2.jpg"), consent=True)
    stranger = Client()
    # The opt-out's token is not a private gallery link...
    assert stranger.get(reverse("gallery:me_resume", args=[event.slug, optout.token])).status_code in (302, 404)
    assert f"selfie:{event.pk}" not in stranger.session
    # ...and an attendee's private link, or a wrong token, withdraws no opt-out.
    for token in (biden.attendee.token, "nope", optout.token[:-1]):
        assert stranger.post(reverse("gallery:optout_link", args=[event.slug, token])).status_code == 404
    other = services.event_create(name="Other", slug="other")
    assert stranger.post(reverse("gallery:optout_link", args=[other.slug, optout.token])).status_code == 404
    assert Attendee.objects.filter(pk=optout.pk).exists()


def test_optout_page_needs_the_event_code_consent_and_a_face(event, run_jobs) -> None:
    event.access_code = "secret"
    event.save()
    url = reverse("gallery:optout", args=[event.slug])
    client = Client()
    assert client.get(url).status_code == 404  # the code first, as for selfies
    client.post(reverse("gallery:event", args=[event.slug]), {"code": "secret"})
    assert client.get(url).status_code == 200
    response = client.post(url, {"image": sample_upload(OPTOUT)})
    assert response.status_code == 400 and not Attendee.objects.exists()
    response = client.post(url, {"image": upload("x.jpg", b"not an image"), "consent": "on"})
    assert response.status_code == 400 and not Attendee.objects.exists()


def test_optout_uploads_count_against_the_selfie_limits(event, settings) -> None:
    settings.SELFIE_UPLOADS_PER_CLIENT = 1
    client = Client()
    url = reverse("gallery:optout", args=[event.slug])
    assert client.post(url, {"image": sample_upload(OPTOUT), "consent": "on"}).status_code == 302
    response = client.post(url, {"image": sample_upload(OPTOUT), "consent": "on"})
    assert response.status_code == 429 and response["Retry-After"]
    assert Attendee.objects.filter(opted_out=True).count() == 1


def test_organizer_registers_and_withdraws_optouts_in_the_admin(dlib_engine, event, run_jobs, admin_client) -> None:
    with run_jobs():
        _import(event, ALONE)
    url = reverse("admin:gallery_event_optouts", args=[event.pk])
    assert admin_client.get(url).status_code == 200
    with run_jobs():
        response = admin_client.post(url, {"files": [sample_upload(OPTOUT)], "consent": "on"})
    assert response.status_code == 302
    optout = Attendee.objects.get(opted_out=True)
    assert Face.objects.get().opted_out
    page = admin_client.get(url).content.decode()
    assert optout.token in page and "obama4" not in page
    assert (
        "blurred"
        in admin_client.get(reverse("admin:gallery_photo_change", args=[Photo.objects.get().pk])).content.decode()
    )
    with run_jobs():
        admin_client.post(url, {"withdraw": optout.pk})
    assert not Attendee.objects.exists() and not Face.objects.get().opted_out


def test_optouts_admin_is_for_staff_only(event, client, django_user_model) -> None:
    url = reverse("admin:gallery_event_optouts", args=[event.pk])
    assert client.get(url).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("visitor", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403


def test_an_optout_wins_its_faces_even_against_a_selfie_cut_from_the_photo(dlib_engine, event, run_jobs) -> None:
    """The searcher's selfie is Obama's face cut out of the group photo itself: nearer to
    that face than any opt-out template can be. The one-person-per-face rule would give
    the face to the nearer selfie; an opt-out wins it anyway."""
    with run_jobs():
        _import(event, GROUP)
        optout = services.optout_create(event=event, upload=sample_upload(OPTOUT), consent=True)
    template = optout.selfies.get().vector()
    image = Image.open(sample(GROUP)).convert("RGB")
    face = min(get_engine("dlib").detect(image), key=lambda found: np.linalg.norm(found.embedding - template))
    margin = face.width
    crop = image.crop((face.left - margin, face.top - margin, face.left + 2 * face.width, face.top + 2 * face.height))
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=95)
    with run_jobs():
        searcher = services.selfie_create(event=event, upload=upload("me.jpg", buffer.getvalue()), consent=True)
    searcher.refresh_from_db()
    assert searcher.match_state == Selfie.State.DONE
    assert np.linalg.norm(searcher.vector() - face.embedding) < np.linalg.norm(template - face.embedding)
    assert _gallery(searcher) == set()


def test_blurred_copies_keep_the_events_watermark(event, run_jobs) -> None:
    """Fake engine (one face in the middle of the photo): the copies made again for an
    opt-out are blurred where the face is and still carry the organizer's watermark."""
    from gallery import branding
    from gallery.images import faces_blurred, fitted

    event.watermark_text = "ACME PHOTO"
    event.watermark_opacity = 100
    event.save()
    noisy = Image.fromarray(np.random.default_rng(7).integers(100, 255, (300, 400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    with run_jobs():
        services.photo_import(event=event, name="party.png", fileobj=io.BytesIO(buffer.getvalue()))
        services.optout_create(event=event, upload=upload("me.png", buffer.getvalue()), consent=True)
    face = Face.objects.get()
    assert face.opted_out
    photo = Photo.objects.get()
    with photo.display.open("rb") as stored:
        served = np.asarray(Image.open(stored).convert("RGB"), dtype=np.float64)
    box = (face.left, face.top, face.width, face.height)
    blurred = fitted(faces_blurred(noisy, [box]), 3000)
    expected = np.asarray(branding.watermarked(blurred, event), dtype=np.float64)
    unmarked = np.asarray(blurred, dtype=np.float64)
    assert np.abs(served - expected).mean() < np.abs(served - unmarked).mean()  # the watermark is there
    middle = served[face.top + 20 : face.top + face.height - 20, face.left + 20 : face.left + face.width - 20]
    assert middle.std() < np.asarray(noisy, dtype=np.float64).std() / 4  # the face is blurred
