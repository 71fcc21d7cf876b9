"""Locust scenario: attendees of one event finding their photos, and lighter visitors.

`make loadtest` (tests/load/run.py) starts the servers, seeds the event and runs this
file headless; it can also be pointed by hand at a server you started yourself:

    LOAD_EVENT_SLUG=load LOAD_EVENT_CODE=1234 .venv/bin/locust -f tests/load/locustfile.py \\
        --host http://127.0.0.1:8000 --headless -u 30 -r 5 -t 2m

Two kinds of users, weighted like an event (3 attendees for 1 visitor):

- Attendee: opens the event link, enters the code, uploads a selfie (a real face photo
  from gallery/sample_photos, never one of the event's photos), polls the status as the
  page does (every 2 s for 30 s, then every 5 s) until done, opens the gallery, loads its
  thumbnails, opens one photo in the viewer, downloads one photo and, where the gallery
  offers it, the zip of all (stylesheet and scripts once per person). Then it leaves: the next
  attendee arrives in the same slot with new cookies and a new address.
- Visitor: opens the event page without a selfie, or comes back by
  the private link of an attendee seen earlier and looks at a few of their photos.

Every attendee's selfie outcome (state, photos found, seconds from upload to done) is
written to LOAD_SELFIE_SUMMARY at the end, not counted as a request: its seconds would
swamp the request percentiles.

Each simulated client sends its own X-Forwarded-For (10.x.y.z): the production settings
trust the proxy's header (BEHIND_PROXY), and per-client limits must see distinct
phones, not 100 phones behind one address.

Environment: LOAD_EVENT_SLUG (default "load"), LOAD_EVENT_CODE (default none),
LOAD_POLL_MAX (seconds, default 180), LOAD_EXPECTED (a JSON file: selfie -> photos the
person is in, to report recall), LOAD_SELFIE_SUMMARY (where to write the per-selfie
outcomes as JSON at the end).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from locust import HttpUser, between, events, task
from urllib3.util.retry import Retry

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # locust puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

from tests.load.seed import SAMPLES, SELFIES  # noqa: E402

SLUG = os.environ.get("LOAD_EVENT_SLUG", "load")
CODE = os.environ.get("LOAD_EVENT_CODE", "")
POLL_MAX = float(os.environ.get("LOAD_POLL_MAX", "180"))
EXPECTED: dict[str, int] = (
    json.loads(Path(os.environ["LOAD_EXPECTED"]).read_text()) if os.environ.get("LOAD_EXPECTED") else {}
)
SELFIE_BYTES = {name: (SAMPLES / name).read_bytes() for name in SELFIES}

PROXY_IDLE_S = 4.0
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
HREF = re.compile(r'(?:href|src)="([^"]+)"')

_clients = itertools.count(1)
_private_links: list[str] = []  # attendees' private links, for visitors coming back
_outcomes: list[dict] = []
_lock = threading.Lock()


def _address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _links(html: str) -> list[str]:
    return list(dict.fromkeys(HREF.findall(html)))


class Client(HttpUser):
    abstract = True

    def on_start(self) -> None:
        self.arrive()
        # Gunicorn closes keep-alive connections idle for its keep-alive (5 s); the
        # proxy in front of it (docs/deploy.md: nginx, keepalive_timeout 4s) closes them
        # first, so it never sends on a connection gunicorn is closing. This client stands
        # in for the proxy and does the same, or a poll every 5 s would race the close.
        send = self.client.request
        self.last_request = time.monotonic()

        def request(*args, **kwargs):
            if time.monotonic() - self.last_request > PROXY_IDLE_S:
                self.client.close()  # drops pooled connections; the next request opens one
            try:
                return send(*args, **kwargs)
            finally:
                self.last_request = time.monotonic()

        self.client.request = request
        # When a kept-alive connection turns out closed (a gunicorn worker recycled after
        # max_requests resets them), nginx sends the request again on a new connection;
        # so does this client, once, for GETs that got no answer. Every HTTP status counts.
        self.client.get_adapter("http://").max_retries = Retry(
            total=1, connect=1, read=1, redirect=0, status=0, other=0, allowed_methods={"GET"}
        )

    def arrive(self) -> None:
        """A new person in this slot: no cookies, their own address."""
        self.client.cookies.clear()
        self.client.headers["X-Forwarded-For"] = _address(next(_clients))
        self.static_loaded = False

    def get(self, path: str, name: str, **kwargs):
        return self.client.get(path, name=name, **kwargs)

    def event_page(self) -> str | None:
        """The event page, through the code form when the event has a code; its CSRF token."""
        with self.client.get(f"/e/{SLUG}/", name="event page", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code} {response.error or ''}")
                return None
            html = response.text
        if 'name="code"' in html and CODE:
            token = CSRF.search(html)
            with self.client.post(
                f"/e/{SLUG}/",
                name="code",
                data={"csrfmiddlewaretoken": token.group(1) if token else "", "code": CODE},
                allow_redirects=False,
                catch_response=True,
            ) as response:
                if response.status_code != 302:
                    response.failure(f"code refused: HTTP {response.status_code}")
                    return None
            html = self.get(f"/e/{SLUG}/", "event page").text
        if not self.static_loaded:  # a browser loads them once, then caches them
            for link in _links(html):
                if link.endswith((".css", ".js")):
                    self.get(link, "static")
            self.static_loaded = True
        token = CSRF.search(html)
        return token.group(1) if token else None

    def browse(self, html: str, *, photos: int) -> None:
        """Thumbnails of the gallery, then a few photos in the viewer."""
        links = _links(html)
        for link in [link for link in links if link.endswith("/thumbnail.jpg")][:12]:
            self.get(link, "thumbnail")
        viewers = [link for link in links if re.search(r"/photos/\d+/$", link)]
        for link in viewers[:photos]:
            page = self.get(link, "viewer")
            # When the viewer is a page around the photo, the photo is loaded too.
            if "text/html" in page.headers.get("Content-Type", ""):
                for image in _links(page.text):
                    other_photo = re.search(r"/photos/\d+/", image) and image.rstrip("/") != link.rstrip("/")
                    if other_photo and not image.endswith(("/download", "/thumbnail.jpg")):
                        self.get(image, "viewer image")
                        break
            self.wait()


class Attendee(Client):
    weight = 3
    wait_time = between(1, 3)

    @task
    def find_my_photos(self) -> None:
        token = self.event_page()
        if token is None:
            self.arrive()
            return
        self.wait()  # takes the selfie, ticks the consent box
        selfie = SELFIES[next(_clients) % len(SELFIES)]
        with self.client.post(
            f"/e/{SLUG}/selfie",
            name="selfie upload",
            data={"csrfmiddlewaretoken": token, "consent": "on"},
            files={"image": (Path(selfie).name, SELFIE_BYTES[selfie], "image/jpeg")},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"selfie refused: HTTP {response.status_code}")
                self.arrive()
                return
        posted = time.monotonic()
        self.get(f"/e/{SLUG}/me/", "me (matching)")
        state, matches = self.poll(posted)
        self.report(selfie, state, matches, posted)
        if state != "done":
            self.arrive()
            return
        html = self.get(f"/e/{SLUG}/me/", "me (done)").text
        private = re.search(rf'href="(https?://[^"]+/e/{SLUG}/me/[^"/]+/)"', html)
        if private:
            with _lock:
                _private_links.append(private.group(1).split("://", 1)[1].split("/", 1)[1])
        self.browse(html, photos=2)
        links = _links(html)
        downloads = [link for link in links if link.endswith("/download")]
        if downloads:
            self.get(downloads[0], "download")
        zips = [link for link in links if link.endswith(".zip")]
        if zips:  # the whole gallery as one archive, where the pages offer it
            self.get(zips[0], "zip download")
        self.arrive()

    def poll(self, posted: float) -> tuple[str, int]:
        """/me/status at the page's rhythm until the selfie is done or failed, or POLL_MAX passed."""
        state, matches = "pending", 0
        while time.monotonic() - posted < POLL_MAX:
            time.sleep(2 if time.monotonic() - posted < 30 else 5)
            with self.client.get(f"/e/{SLUG}/me/status", name="status", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code} {response.error or ''}")
                    continue
                body = response.json()
            state, matches = body["state"], body["matches"]
            if state in ("done", "failed"):
                break
        return state, matches

    def report(self, selfie: str, state: str, matches: int, posted: float) -> None:
        expected = EXPECTED.get(selfie)
        elapsed = time.monotonic() - posted
        with _lock:
            _outcomes.append(
                {"selfie": selfie, "state": state, "matches": matches, "expected": expected, "seconds": elapsed}
            )


class Visitor(Client):
    weight = 1
    wait_time = between(2, 6)

    @task(2)
    def look_at_the_event_page(self) -> None:
        self.event_page()
        self.arrive()

    @task(3)
    def come_back_by_private_link(self) -> None:
        with _lock:
            link = _private_links[next(_clients) % len(_private_links)] if _private_links else None
        if link is None:
            self.look_at_the_event_page()
            return
        # The private link redirects to the gallery; requests follows, as a browser would.
        page = self.get(f"/{link}", "private link")
        self.browse(page.text, photos=3)
        self.arrive()


@events.quitting.add_listener
def _write_selfie_summary(environment, **kwargs) -> None:
    path = os.environ.get("LOAD_SELFIE_SUMMARY")
    if path:
        with _lock:
            Path(path).write_text(json.dumps(_outcomes, indent=1))
