"""Opting out in a real browser (headless Chromium, phone size), on a real face, then withdrawing.

Jobs run inline in the live server (django-q2's sync mode, the tests' default), with dlib.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from gallery import services
from gallery.models import Attendee, Face
from tests.conftest import CHROMIUM, sample
from tests.test_browser import shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.dlib,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt install chromium)"),
    pytest.mark.usefixtures("browser_connections"),
]


def test_a_person_opts_out_from_the_event_page_and_withdraws(live_server, dlib_engine, new_context) -> None:
    event = services.event_create(name="Garden party", slug="garden", code="Rose-7")
    services.paths_import(event=event, paths=[sample("groups/kit_with_rose.jpg")])
    page = new_context().new_page()
    page.set_default_timeout(20_000)

    page.goto(f"{live_server.url}/e/{event.slug}/")
    page.get_by_label("Event code").fill("Rose-7")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("link", name="Opt out").click()
    expect(page.get_by_role("heading", name="Don't show me")).to_be_visible()
    shoot(page, "optout-1-form")
    page.locator("input[type=file][name=image]").set_input_files(sample("people/kit_harington/kit2.jpg"))
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Hide me in the photos").click()

    expect(page.get_by_role("heading", name="You are hidden in this event's photos")).to_be_visible()
    shoot(page, "optout-2-done")
    optout = Attendee.objects.get(opted_out=True)
    assert optout.token in page.locator("input[readonly]").input_value()
    assert list(Face.objects.filter(opted_out=True).values_list("photo__original_name", flat=True)) == [
        "kit_with_rose.jpg"
    ]

    page.get_by_role("button", name="Withdraw and delete my photo").click()
    expect(page.get_by_role("heading", name="Opt-out withdrawn")).to_be_visible()
    assert not Attendee.objects.exists()
    assert not Face.objects.filter(opted_out=True).exists()
