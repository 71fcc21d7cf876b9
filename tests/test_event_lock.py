"""A matching decision locks its event; attendees arriving meanwhile must not wait for it (PostgreSQL).

On SQLite every write transaction is IMMEDIATE, so writers queue anyway (busy_timeout);
on PostgreSQL the lock is a row lock that inserts referring to the event must not need.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from gallery import services
from gallery.models import Event
from matching.services import _event_lock
from tests.conftest import selfie_row

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_decision_in_progress_lets_attendees_upload_and_download():
    if connection.vendor != "postgresql":
        pytest.skip("a row lock: PostgreSQL only (the second pass of .ci/run)")
    event = Event.objects.create(name="Locked", slug="locked")
    locked, release = threading.Event(), threading.Event()

    def decide() -> None:
        try:
            with transaction.atomic():
                assert _event_lock(event.pk) is not None
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    decision = threading.Thread(target=decide)
    decision.start()
    try:
        assert locked.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Fails with "canceling statement due to lock timeout" if the insert waits.
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            selfie_row(event)
            services.event_downloads_count(event_id=event.pk)
            services.event_downloads_count(event_id=event.pk, photos=3, zip_download=True)
    finally:
        release.set()
        decision.join()
    assert event.selfies.count() == 1
    assert list(event.downloads.values_list("photos", "zip")) == [(1, False), (3, True)]
