"""Camera-only events in a real browser (headless Chromium, phone size).

The camera is Chromium's fake capture device, fed a Y4M video made here from two
sample photos of Obama: a few seconds facing the camera, then a few seconds turned
(looped). A small square in a corner tells the test which of the two the camera
shows, so each picture is taken while the right one is on screen. Jobs run inline in
the live server (django-q2's sync mode, the tests' default), with dlib.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserType, Page, expect

from gallery import services
from gallery.images import fitted, load_rgb
from gallery.models import Selfie
from tests.conftest import CHROMIUM, sample
from tests.test_browser import shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt install chromium)"),
    pytest.mark.usefixtures("browser_connections"),
]

WIDTH, HEIGHT, FPS = 640, 480, 5
SECONDS_EACH = 2
# The marker square's grey level: white while the camera faces Obama, dark grey while he is turned.
FACING, TURNED = 255, 60
MARKER = 24


def _frame(relative: str, marker: int) -> Image.Image:
    with sample(relative).open("rb") as file:
        photo = fitted(load_rgb(file), HEIGHT)
    frame = Image.new("RGB", (WIDTH, HEIGHT))
    frame.paste(photo, ((WIDTH - photo.width) // 2, (HEIGHT - photo.height) // 2))
    frame.paste((marker,) * 3, (0, 0, MARKER, MARKER))  # in the black margin, away from the face
    return frame


def _y4m_frame(image: Image.Image) -> bytes:
    """One frame of planar YUV 4:2:0 (full-range JPEG YCbCr, as 'C420jpeg' says)."""
    y, cb, cr = (np.asarray(plane) for plane in image.convert("YCbCr").split())
    half = [
        plane.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8) for plane in (cb, cr)
    ]
    return b"FRAME\n" + y.tobytes() + half[0].tobytes() + half[1].tobytes()


@pytest.fixture
def camera_video(tmp_path: Path) -> Path:
    """Obama facing the camera, then turned, SECONDS_EACH seconds each (Chromium loops it)."""
    facing = _y4m_frame(_frame("people/obama/obama.jpg", FACING))
    turned = _y4m_frame(_frame("people/obama/obama2.jpg", TURNED))
    video = tmp_path / "camera.y4m"
    header = f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode()
    video.write_bytes(header + (facing * FPS * SECONDS_EACH) + (turned * FPS * SECONDS_EACH))
    return video


@pytest.fixture
def camera_browser(browser_type: BrowserType, browser_type_launch_args: dict, camera_video: Path) -> Iterator[Browser]:
    """Chromium with the fake camera playing `camera_video`, camera permission granted."""
    args = [
        *browser_type_launch_args["args"],
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_video}",
    ]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    yield browser
    browser.close()


def _take_picture_when(page: Page, wanted: int) -> None:
    """Take the picture just after the camera switched to the wanted photo (a second or more to spare)."""
    page.wait_for_function(
        """([wanted, size]) => {
            const video = document.querySelector("[data-video]");
            if (!video.videoWidth) return false;
            const canvas = document.createElement("canvas");
            canvas.width = video.videoWidth;
            canvas.height = video.videoHeight;
            const context = canvas.getContext("2d");
            context.drawImage(video, 0, 0);
            const grey = context.getImageData(size / 2, size / 2, 1, 1).data[0];
            const now = Math.abs(grey - wanted) < 40;
            const switched = now && window.cameraTestBefore === false;
            window.cameraTestBefore = now;
            return switched;
        }""",
        arg=[wanted, MARKER],
        polling=100,
    )
    page.get_by_role("button", name="Take the picture").click()


@pytest.mark.dlib
def test_a_camera_only_selfie_is_taken_facing_then_turned_and_finds_the_photos(
    live_server, dlib_engine, camera_browser: Browser, browser_context_args: dict
) -> None:
    event = services.event_create(name="Night run", slug="night-run")
    event.camera_only = True
    event.save()
    services.paths_import(event=event, paths=[sample("people/obama/obama3.jpg"), sample("groups/kit_with_rose.jpg")])
    page = camera_browser.new_context(**browser_context_args).new_page()
    page.set_default_timeout(30_000)

    page.goto(f"{live_server.url}/e/{event.slug}/")
    expect(page.get_by_role("button", name="Start the camera")).to_be_visible()
    assert page.locator("input[type=file]").count() == 0  # no file to choose, ever
    expect(page.get_by_role("button", name="Find my photos")).to_be_disabled()
    page.get_by_role("button", name="Start the camera").click()
    expect(page.get_by_text("Look straight at the camera, then take the first picture.")).to_be_visible()

    _take_picture_when(page, FACING)
    expect(page.get_by_text("Now turn your head a little to one side")).to_be_visible()
    _take_picture_when(page, TURNED)
    expect(page.get_by_text("Done: tick the box below and send your selfie.")).to_be_visible()
    expect(page.get_by_role("img", name="Your second picture")).to_be_visible()
    shoot(page, "camera-1-two-pictures")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Find my photos").click()

    expect(page.get_by_text("We found you in 1 photo.")).to_be_visible()
    shoot(page, "camera-2-found")
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.DONE and selfie.turned_image.name == ""
    assert list(selfie.attendee.photos().values_list("original_name", flat=True)) == ["obama3.jpg"]


def test_a_camera_only_event_without_a_camera_or_javascript_says_so(live_server, new_context) -> None:
    """Chromium without a fake camera has none; without JavaScript there is no camera either."""
    event = services.event_create(name="Night run", slug="night-run")
    event.camera_only = True
    event.save()
    page = new_context().new_page()
    page.goto(f"{live_server.url}/e/{event.slug}/")
    page.get_by_role("button", name="Start the camera").click()
    expect(page.get_by_text("we could not use a camera here")).to_be_visible()
    expect(page.get_by_role("button", name="Find my photos")).to_be_disabled()
    shoot(page, "camera-3-no-camera")

    page = new_context(java_script_enabled=False).new_page()
    page.goto(f"{live_server.url}/e/{event.slug}/")
    expect(page.get_by_text("which needs JavaScript")).to_be_visible()
    assert page.locator("input[type=file]").count() == 0
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Find my photos").click()  # posts nothing to upload: refused
    expect(page.get_by_text("in two pictures.")).to_be_visible()
    assert not Selfie.objects.exists()
