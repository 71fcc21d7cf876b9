"""The attendee's way through in a real browser (headless Chromium), on real faces.

A live Django server, a real qcluster process with the dlib engine, and Debian's
Chromium driven by Playwright: event code, consent, selfie, the page that refreshes
itself while matching runs, the gallery, a download; then a second attendee who
sees nothing of the first one's photos and whose face-less selfie fails clearly.

Set BROWSER_SCREENSHOTS=/some/dir to save phone (390x844) and desktop (1280x800)
screenshots of every step there.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from gallery import services
from gallery.models import Event, Photo
from tests.conftest import BIDEN_SELFIE, BIDEN_TWICE_AND_KIT, CHROMIUM, PHONE, jpeg_bytes, wait_for

DESKTOP = {"width": 1280, "height": 800}
SHOTS = os.environ.get("BROWSER_SCREENSHOTS", "")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.dlib,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt install chromium)"),
    pytest.mark.usefixtures("browser_connections"),
]


def shoot(page: Page, name: str) -> None:
    """Screenshots of the current page on a phone and on a desktop, when asked for."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        page.screenshot(path=f"{SHOTS}/{name}-{label}.png", full_page=True)
    page.set_viewport_size(PHONE)


def test_attendee_finds_and_downloads_their_photos(live_server, qcluster, dlib_engine, new_context):
    event = services.event_create(name="Cluster night", slug="night", code="Sunset-42")
    qcluster()
    assert len(services.paths_import(event=event, paths=BIDEN_TWICE_AND_KIT).created) == 3
    event_url = f"{live_server.url}/e/{event.slug}/"
    me_url = f"{event_url}me/"

    attendee = new_context()
    page = attendee.new_page()
    blocked = csp_violations(page)
    page.set_default_timeout(15_000)

    # The event is private: first the code (a wrong one, then the right one).
    page.goto(event_url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Cluster night")
    code = page.get_by_label("Event code")
    expect(code).to_be_visible()
    expect(page.get_by_text("biometric")).to_have_count(0)
    shoot(page, "1-code")
    code.fill("nope")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    shoot(page, "2-code-wrong")
    page.get_by_label("Event code").fill(" sunset-42 ")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_label("Event code")).to_have_count(0)
    expect(page.get_by_text("biometric")).to_be_visible()
    shoot(page, "3-selfie-form")

    # Without consent the browser itself refuses to send the selfie...
    selfie_input = page.locator("input[type=file][name=image]")
    consent = page.get_by_role("checkbox")
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    selfie_input.set_input_files(BIDEN_SELFIE)
    page.get_by_role("button", name="Find my photos").click()
    page.wait_for_timeout(500)
    assert posts == [] and page.url == event_url
    assert consent.evaluate("box => box.validity.valueMissing")
    # ...and so does the server, for browsers that would send it anyway.
    page.evaluate("document.querySelectorAll('[required]').forEach(field => field.removeAttribute('required'))")
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Find my photos").click()
    assert refused.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("Please agree")
    shoot(page, "4-selfie-errors")

    # The photos are indexed by now or soon; the selfie is matched against all of them.
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.INDEXED).count() == 3, timeout=90, what="indexing")
    page.locator("input[type=file][name=image]").set_input_files(BIDEN_SELFIE)
    page.get_by_role("checkbox").check()
    expect(page.locator("[data-preview] img")).to_be_visible()  # the chosen selfie, shown before sending
    shoot(page, "5-selfie-chosen")
    page.get_by_role("button", name="Find my photos").click()
    expect(page).to_have_url(me_url)
    shoot(page, "6-me-matching")

    # The page refreshes itself until the gallery shows the two photos Biden is in.
    grid = page.locator(".grid li")
    expect(grid).to_have_count(2, timeout=45_000)
    expect(page.get_by_text("We found you in 2 photos")).to_be_visible()
    for image in page.locator(".grid img").all():
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") > 0
    shoot(page, "7-me-done")

    with page.expect_download() as downloading:
        page.locator(".tile .download").first.click()
    download = downloading.value
    assert download.suggested_filename in {"two_people.jpg", "biden.jpg"}
    data = Path(download.path()).read_bytes()
    assert data[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    photo_url = page.locator(".grid img").first.get_attribute("src")
    assert page.request.get(live_server.url + photo_url).headers["content-type"] == "image/jpeg"

    # Another attendee, on another phone: nothing of the first one's photos.
    stranger = new_context()
    other = stranger.new_page()
    blocked_other = csp_violations(other)
    other.set_default_timeout(15_000)
    other.goto(me_url)  # not even unlocked: sent to the code form, nothing to see
    expect(other).to_have_url(event_url)
    expect(other.get_by_label("Event code")).to_be_visible()
    shoot(other, "8-stranger-locked")
    assert other.request.get(live_server.url + photo_url).status == 404
    other.goto(event_url)
    other.get_by_label("Event code").fill("SUNSET-42")
    other.get_by_role("button", name="Continue").click()
    expect(other.get_by_text("biometric")).to_be_visible()
    other.goto(me_url)
    expect(other).to_have_url(event_url)  # no selfie yet: back to the event page
    expect(other.get_by_text("biometric")).to_be_visible()
    expect(other.get_by_text("You already took a selfie")).to_have_count(0)
    expect(other.locator(".grid img")).to_have_count(0)
    assert other.request.get(live_server.url + photo_url).status == 404

    # Their selfie shows no face: the page says so and offers to try again.
    other.locator("input[type=file][name=image]").set_input_files(
        {"name": "blank.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes((90, 140, 200), size=(640, 480))}
    )
    other.get_by_role("checkbox").check()
    other.get_by_role("button", name="Find my photos").click()
    expect(other).to_have_url(me_url)
    expect(other.get_by_text("could not find a face")).to_be_visible(timeout=45_000)
    expect(other.get_by_role("link", name="Take another selfie")).to_be_visible()
    expect(other.locator(".grid img")).to_have_count(0)
    shoot(other, "9-me-failed")

    stranger.close()

    # Back on the event page, the first attendee is told where their photos are.
    page.goto(event_url)
    shoot(page, "10-selfie-again")
    page.get_by_role("link", name="See your photos").click()
    expect(page).to_have_url(me_url)
    expect(page.locator(".grid li")).to_have_count(2)
    attendee.close()
    # The preview, the busy button and the confirmation ran from static files: nothing
    # was refused by the Content-Security-Policy.
    assert blocked == [] and blocked_other == []


def csp_violations(page: Page) -> list[str]:
    """Console errors of resources or code the Content-Security-Policy refused, as they come."""
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    return refused


def test_admin_works_under_the_content_security_policy(live_server, new_context, django_user_model):
    """Django's admin scripts (actions, prepopulated slug, popups) and ours, with the CSP enforced."""
    django_user_model.objects.create_superuser("organizer", "o@example.org", "right-password-123")
    services.event_create(name="Spring ball", slug="spring-ball")
    page = new_context().new_page()
    page.set_viewport_size(DESKTOP)
    refused = csp_violations(page)
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/gallery/event/")
    page.get_by_label("Username").fill("organizer")
    page.get_by_label("Password").fill("right-password-123")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/gallery/event/")
    page.wait_for_load_state("load")  # the admin's actions.js starts on the window's load event
    # actions.js: ticking "select all" ticks every row and counts them.
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    # prepopulate.js: the slug follows the name on a new event.
    page.goto(f"{live_server.url}/admin/gallery/event/add/")
    page.get_by_label("Name:", exact=True).press_sequentially("Winter Gala")  # key by key, as prepopulate.js listens
    expect(page.get_by_label("Link name:", exact=True)).to_have_value("winter-gala")
    page.goto(f"{live_server.url}/admin/gallery/event/{Event.objects.get().pk}/change/")
    expect(page.locator(".qr-code svg")).to_be_visible()
    assert page.locator(".qr-code").evaluate("box => box.getBoundingClientRect().width") == 200  # organizer-admin.css
    assert refused == []
