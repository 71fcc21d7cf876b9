"""The whole attendee path in a real browser, once in English and once in French.

Debian's Chromium (Playwright), a live server, a real qcluster with dlib on real
faces: open the event, enter the code, consent, send a selfie, wait for the
gallery, open the viewer and go next (button and arrow key), download one photo
and the zip (its content checked), mark one photo "not me" and see it stay gone
after `rematch`, add a second selfie, delete everything. Every page is checked
with axe-core (no serious or critical violation) and for sideways scrolling at
320 px. Screenshots of each step at 390x844 and 1280x800 go to
tests/e2e/screenshots/<language>/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image
from playwright.sync_api import Page, expect

from gallery import services
from gallery.models import Attendee, Photo, Selfie
from tests.conftest import CHROMIUM, PHONE, ROOT, sample, wait_for

DESKTOP = {"width": 1280, "height": 800}
NARROWEST = 320
SCREENSHOTS = ROOT / "tests" / "e2e" / "screenshots"
# Obama is in three of these four photos; his selfies (obama.jpg, obama2.jpg) are none of them.
PHOTOS = [
    "people/obama/obama3.jpg",
    "people/obama/obama4.jpg",
    "groups/obama_and_biden.jpg",
    "people/kit_harington/kit1.jpg",
]
OBAMA_PHOTOS = {"obama3.jpg", "obama4.jpg", "obama_and_biden.jpg"}

TEXT = {
    "en": {
        "locale": "en-GB",
        "code": "Event code",
        "continue": "Continue",
        "consent": "biometric",
        "find": "Find my photos",
        "found3": "We found you in 3 photos.",
        "found2": "We found you in 2 photos.",
        "next": "Next",
        "download": "Download",
        "zip": "Download all 3 photos (zip)",
        "back": "Back to your photos",
        "not_me": "Not me",
        "removed": "The photo was removed from your photos.",
        "add": "Add another selfie",
        "add_this": "Add this selfie",
        "two_selfies": "Your 2 selfies",
        "delete": "Delete my selfies and matches",
        "confirm": "Yes, delete everything",
        "deleted": "Your selfies and the list of your photos were deleted.",
        "privacy": "How your selfie and photos are handled",
    },
    "fr": {
        "locale": "fr-FR",
        "code": "Code de l\u2019événement",
        "continue": "Continuer",
        "consent": "biométrique",
        "find": "Trouver mes photos",
        "found3": "Nous vous avons trouvé sur 3 photos.",
        "found2": "Nous vous avons trouvé sur 2 photos.",
        "next": "Suivante",
        "download": "Télécharger",
        "zip": "Télécharger les 3 photos (zip)",
        "back": "Retour à vos photos",
        "not_me": "Pas moi",
        "removed": "La photo a été retirée de vos photos.",
        "add": "Ajouter un autre selfie",
        "add_this": "Ajouter ce selfie",
        "two_selfies": "Vos 2 selfies",
        "delete": "Supprimer mes selfies et mes résultats",
        "confirm": "Oui, tout supprimer",
        "deleted": "Vos selfies et la liste de vos photos ont été supprimés.",
        "privacy": "Ce que nous faisons de votre selfie et de vos photos",
    },
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.dlib,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt install chromium)"),
    pytest.mark.usefixtures("browser_connections"),
]


class Steps:
    """Screenshots, accessibility and narrow-screen checks for each step of one language's run."""

    def __init__(self, page: Page, language: str) -> None:
        self.page, self.n = page, 0
        self.folder = SCREENSHOTS / language
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.axe = Axe()

    def check(self, name: str) -> None:
        self.n += 1
        page = self.page
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(size)
            page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}-{label}.png"), full_page=True)
        page.set_viewport_size({"width": NARROWEST, "height": 700})
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= NARROWEST, f"{name}: the page scrolls sideways at {NARROWEST} px ({overflow} px wide)"
        page.set_viewport_size(PHONE)
        violations = [
            f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']][:3]}"
            for violation in self.axe.run(page).response["violations"]
            if violation["impact"] in ("serious", "critical")
        ]
        assert violations == [], f"{name}: accessibility violations {violations}"


def _wait_until_matched(count: int) -> None:
    wait_for(
        lambda: (
            Selfie.objects.filter(match_state=Selfie.State.DONE).count() == count
            and not Selfie.objects.exclude(match_state=Selfie.State.DONE).exists()
        ),
        timeout=90,
        what=f"{count} selfie(s) matched",
    )


@pytest.mark.parametrize("language", ["en", "fr"])
def test_attendee_path_from_link_to_zip(language, live_server, qcluster, dlib_engine, new_context):
    text = TEXT[language]
    event = services.event_create(name="Gala", slug="gala", code="Sunset-42")
    qcluster()
    assert len(services.paths_import(event=event, paths=[sample(path) for path in PHOTOS]).created) == 4
    event_url = f"{live_server.url}/e/{event.slug}/"
    me_url = f"{event_url}me/"

    context = new_context(locale=text["locale"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    steps = Steps(page, language)

    # The home page finds the event from its typed name; the privacy page is public.
    page.goto(live_server.url + "/")
    steps.check("home")
    page.locator("input[name=event]").fill("Gala")
    page.keyboard.press("Enter")
    expect(page).to_have_url(event_url)
    page.goto(f"{event_url}privacy")
    steps.check("privacy")
    page.goto(f"{live_server.url}/e/no-such-event/")
    steps.check("not-found")

    # The event link asks for the code, in the browser's language.
    page.goto(event_url)
    assert page.locator("html").get_attribute("lang") == language
    steps.check("code")
    page.get_by_label(text["code"]).fill("sunset-42")
    page.keyboard.press("Enter")  # the keyboard sends the form
    expect(page.get_by_text(text["consent"])).to_be_visible()
    expect(page.get_by_role("link", name=text["privacy"])).to_be_visible()
    steps.check("selfie-form")

    # Consent and a selfie (with its preview), sent once every photo is indexed.
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.INDEXED).count() == 4, timeout=120, what="indexing")
    page.locator("input[type=file][name=image]").set_input_files(sample("people/obama/obama.jpg"))
    page.get_by_role("checkbox").check()
    expect(page.locator("[data-preview] img")).to_be_visible()
    steps.check("selfie-chosen")
    page.get_by_role("button", name=text["find"]).click()
    expect(page).to_have_url(me_url)

    # The gallery fills in by itself.
    expect(page.locator(".grid li")).to_have_count(3, timeout=60_000)
    expect(page.get_by_text(text["found3"])).to_be_visible()
    steps.check("gallery")

    # The viewer: next by its button, back by the arrow key; download from there.
    # By keyboard alone: Tab to the first photo, Enter opens it.
    first_tile = page.locator(".grid a.tile-photo").first
    for _ in range(40):
        page.keyboard.press("Tab")
        if first_tile.evaluate("link => link === document.activeElement"):
            break
    else:
        pytest.fail("the first photo cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/photos/\d+/$"))
    first_url = page.url
    expect(page.locator(".viewer-photo img")).to_be_visible()
    expect(page.locator(".viewer-photo img")).to_have_js_property("complete", True)  # visible before decoded
    assert page.locator(".viewer-photo img").evaluate("img => img.naturalWidth") > 0
    steps.check("viewer")
    page.get_by_role("link", name=text["next"]).click()
    expect(page).not_to_have_url(first_url)
    page.keyboard.press("ArrowLeft")
    expect(page).to_have_url(first_url)
    with page.expect_download() as downloading:
        page.locator(".viewer-bar").get_by_role("link", name=text["download"]).click()
    one = Path(downloading.value.path()).read_bytes()
    assert Image.open(io.BytesIO(one)).format == "JPEG"
    assert downloading.value.suggested_filename in OBAMA_PHOTOS
    page.get_by_role("link", name=text["back"]).click()
    photo_id = first_url.rstrip("/").rsplit("/", 1)[1]
    expect(page).to_have_url(f"{me_url}#photo-{photo_id}")

    # Everything at once: a zip of exactly the three photos.
    with page.expect_download() as downloading:
        page.get_by_role("link", name=text["zip"]).click()
    archive = zipfile.ZipFile(downloading.value.path())
    assert set(archive.namelist()) == OBAMA_PHOTOS and archive.testzip() is None

    # "Not me" on one photo: gone at once, an undo offered, and still gone after rematch.
    rejected = page.locator(".grid li").first.get_attribute("id")
    page.locator(".grid li").first.get_by_role("button", name=text["not_me"]).click()
    expect(page.get_by_text(text["removed"])).to_be_visible()
    expect(page.locator(".grid li")).to_have_count(2)
    steps.check("not-me")
    assert services.event_rematch(event=event) == 1
    _wait_until_matched(1)
    page.goto(me_url)
    expect(page.locator(".grid li")).to_have_count(2)
    expect(page.locator(f"#{rejected}")).to_have_count(0)

    # A second selfie joins the same gallery; the rejected photo stays out.
    page.get_by_role("link", name=text["add"]).click()
    page.locator("input[type=file][name=image]").set_input_files(sample("people/obama/obama2.jpg"))
    page.get_by_role("checkbox").check()
    steps.check("second-selfie")
    page.get_by_role("button", name=text["add_this"]).click()
    expect(page).to_have_url(me_url)
    _wait_until_matched(2)
    page.goto(me_url)
    expect(page.get_by_text(text["found2"])).to_be_visible()
    expect(page.get_by_role("heading", name=text["two_selfies"])).to_be_visible()
    expect(page.locator(f"#{rejected}")).to_have_count(0)
    assert Attendee.objects.count() == 1
    steps.check("gallery-two-selfies")

    # Delete everything: a confirmation first, then a message.
    page.get_by_role("link", name=text["delete"]).click()
    steps.check("delete-confirm")
    page.get_by_role("button", name=text["confirm"]).click()
    expect(page).to_have_url(event_url)
    expect(page.get_by_text(text["deleted"])).to_be_visible()
    steps.check("deleted")
    assert not Attendee.objects.exists() and not Selfie.objects.exists()
    context.close()
