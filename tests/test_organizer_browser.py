"""The organizer's event page in a real browser: the dashboard moves by itself while a real
qcluster indexes, the lists fit a 1280x800 screen, the poster downloads.

Debian's Chromium (Playwright), a live server and a qcluster process. Screenshots
go to tests/e2e/screenshots/organizer/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from gallery import services
from gallery.models import Photo
from tests.conftest import BIDEN_TWICE_AND_KIT, CHROMIUM, ROOT, corrupt_jpeg

DESKTOP = {"width": 1280, "height": 800}
SCREENSHOTS = ROOT / "tests" / "e2e" / "screenshots" / "organizer"
PASSWORD = "a-long-enough-pass-phrase-42"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt install chromium)"),
    pytest.mark.usefixtures("browser_connections"),
]


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def fits_the_screen(page: Page) -> bool:
    """Nothing scrolls sideways: every column of the list is visible at 1280 px."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_dashboard_follows_indexing_and_the_poster_downloads(live_server, qcluster, new_context, tmp_path):
    organizer = services.organizer_create(username="olga", email="olga@example.org", password=PASSWORD)
    event = services.event_create(name="Remise des diplômes 2026", owner=organizer)
    other = services.event_create(name="Someone else's party")
    # Queued before any cluster runs: the page opens with every photo pending.
    assert len(services.paths_import(event=event, paths=BIDEN_TWICE_AND_KIT).created) == 3
    broken = tmp_path / "broken-camera-file-with-a-long-name.jpg"
    broken.write_bytes(corrupt_jpeg())
    services.paths_import(event=event, paths=[broken])
    services.paths_import(event=other, paths=BIDEN_TWICE_AND_KIT[:1])

    page = new_context().new_page()
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/gallery/event/")
    expect(page.get_by_role("link", name="Remise des diplômes 2026")).to_be_visible()
    expect(page.get_by_text("Someone else's party")).to_have_count(0)
    shoot(page, "event-list")
    assert fits_the_screen(page)
    expect(page.locator("th.column-selfie_total")).to_be_in_viewport()

    page.goto(f"{live_server.url}/admin/gallery/event/{event.pk}/change/")
    board = page.locator("#event-dashboard")
    expect(board.locator('[data-count="pending"]')).to_have_text("4")
    expect(board.locator('[data-count="indexed"]')).to_have_text("0")
    shoot(page, "dashboard-pending")

    qcluster()  # the page is not reloaded from here on
    expect(board.locator('[data-count="indexed"]')).to_have_text("3", timeout=90_000)
    expect(board.locator('[data-count="failed"]')).to_have_text("1")
    expect(board.locator('[data-count="pending"]')).to_have_text("0")
    expect(board.locator("progress")).to_have_attribute("value", "4")
    assert Photo.objects.filter(event=event).finished().count() == 4
    page.reload()  # the failure and its reason are listed once it happened
    expect(board.get_by_text("broken-camera-file-with-a-long-name.jpg")).to_be_visible()
    shoot(page, "dashboard-done")

    with page.expect_download() as download:
        board.get_by_role("link", name="Printable poster (PNG)").click()
    assert download.value.suggested_filename == f"{event.slug}-poster.png"
    poster = tmp_path / "poster.png"
    download.value.save_as(poster)
    assert poster.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.goto(f"{live_server.url}/admin/gallery/photo/")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    shoot(page, "photo-list")
    assert fits_the_screen(page)
    # Django's list scrolls sideways inside its own box: every column must show without that.
    for column in ("taken_at", "index_state", "faces", "short_error"):
        expect(page.locator(f"th.column-{column}")).to_be_in_viewport()
    photo = Photo.objects.filter(event=event, face_count__gt=0).first()
    page.goto(f"{live_server.url}/admin/gallery/photo/{photo.pk}/change/")
    expect(page.locator("g.face-box")).to_have_count(photo.face_count)
    shoot(page, "photo-faces")

    # Another organizer's event is nowhere, not even by its address.
    page.goto(f"{live_server.url}/admin/gallery/event/{other.pk}/change/")
    assert page.url.rstrip("/").endswith("/admin")


def test_upload_page_sends_a_zip_and_loose_files_in_chunks(
    live_server, transactional_db, new_context, tmp_path, settings
):
    import zipfile

    settings.UPLOAD_CHUNK_BYTES = 64 * 1024  # several chunks per file
    organizer = services.organizer_create(username="olga", email="olga@example.org", password=PASSWORD)
    event = services.event_create(name="Gala", owner=organizer)
    archive = tmp_path / "gala.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in BIDEN_TWICE_AND_KIT[:2]:
            bundle.write(path, path.name)
        bundle.writestr("readme.txt", "not a photo")
    page = new_context().new_page()
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/gallery/event/{event.pk}/upload/")
    page.set_input_files("#id_files", [str(archive), str(BIDEN_TWICE_AND_KIT[2])])
    page.click("input[type=submit]")
    panel = page.locator("#upload-progress")
    expect(panel).to_have_attribute("data-done", "yes", timeout=60_000)
    expect(panel.locator("[data-summary]")).to_have_text("100 %")
    expect(panel.locator("li").nth(0)).to_contain_text("gala.zip: 2 imported, 0 duplicates skipped, 1 rejected")
    expect(panel.locator("li").nth(1)).to_contain_text("kit1.jpg: 1 imported")
    shoot(page, "upload-done")
    assert Photo.objects.filter(event=event).count() == 3
