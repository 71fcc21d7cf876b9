"""Indexing photos and matching selfies. Called by jobs and commands, never by a web request.

Each job claims its row with a conditional update (pending -> processing), so
two workers never index the same photo, and a job that finds nothing to claim
returns without touching anything. A claim older than the cluster's timeout
is considered abandoned (the worker died) and is taken again by the job's next
delivery, or by the sweeper (matching.tasks.stuck_requeue_task, scheduled in
django-q2) when no delivery comes (see the QuerySets in gallery.models).

Re-matching needs no extra job: a photo job commits its faces first and then
compares them with the event's enrolled selfies; a selfie job commits its
embedding first and then compares it with the event's indexed faces. Whichever
commits second sees the other's row, so no pair is missed; and each job, when it
replaces its old matches, deletes only those older than its own search, never a
match the other job recorded meanwhile. Both times, a match's creation and the
start of a search, come from the database's clock: workers' clocks may drift.

With an embedding engine (dlib) matching is an event-level decision
(matching.rules: one person per face, identities, quality gate, query expansion):
each job, once its faces or its selfie's embedding are committed, decides again
the identities its change concerns and replaces their matches, under a lock on
the event (`_event_lock`), so decisions never interleave: the later one sees the
earlier one's rows, and a take-over is never undone by a stale decision. Hosted
engines (Rekognition) keep the search-and-replace above.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import secrets
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, QuerySet
from django.db.models.functions import Now
from django.db.models.sql import Query
from django.utils.translation import gettext_noop
from PIL import Image

from gallery import branding, jobs
from gallery.images import ImageProblem, faces_blurred, fitted, jpeg_file, load_rgb, load_scaled
from gallery.models import Attendee, Event, Face, Match, Photo, Selfie
from gallery.services import selfie_copy_store, selfie_image_drop, selfie_is_original, selfie_turned_drop
from matching import index, pose, quality, rules
from matching.engines import get_engine
from matching.engines.base import EmbeddingEngine, FaceEngine, FaceGone, FoundFace, HostedEngine, PhotoFaces

if TYPE_CHECKING:
    from django.core.files.base import ContentFile
    from django.db.models.fields.files import FieldFile

logger = logging.getLogger("trouvaille.matching")

# Stored in English and translated when shown (the attendee page translates
# these exact texts): a job has no attendee language to write them in.
SELFIE_FAILED_MESSAGE = gettext_noop(
    "Something went wrong while looking for your photos. Please try again in a few minutes."
)
NO_FACE_MESSAGE = gettext_noop(
    "We could not find a face in your selfie. Please take another one facing the camera, in good light."
)


def _explain(exc: Exception) -> str:
    if isinstance(exc, ImageProblem):
        return str(exc)
    return f"Unexpected error: {type(exc).__name__}: {exc}"[:2000]


# --- Photos -------------------------------------------------------------------


def photo_index(*, photo_id: int) -> str:
    """Find and store the faces of one photo, then match it against the event's selfies.

    Claim the photo; read it, make its served copies and find its faces (any
    failure is recorded on the photo); store the faces; match the event's selfies.
    """
    if not Photo.objects.claim(pk=photo_id):
        return "skipped"
    photo = Photo.objects.select_related("event").get(pk=photo_id)
    engine = get_engine()
    try:
        with photo.original.open("rb") as original:
            # Nothing below needs more than the display size: a large JPEG is
            # decoded at a reduced scale (DCT scaling) no smaller than it.
            image, full_size = load_scaled(original, side=settings.DISPLAY_MAX_SIDE)
        # One resize for all that follows the decode: the served copies are made
        # from it and the engine searches it (dlib needs no more than ~2,900 px to
        # find faces of 2.5% of the longest side; see matching.engines.dlib).
        display = fitted(image, settings.DISPLAY_MAX_SIDE)
        if not _photo_derivatives_make(photo=photo, image=display):
            return "superseded"  # deleted while we worked: no engine call, no files left
        result = engine.index_photo(event_id=photo.event_id, photo_id=photo.pk, image=display)
        # Face boxes are stored in the original's pixels, whatever scale was decoded.
        result = dataclasses.replace(result, faces=_in_pixels_of(result.faces, scale=full_size[0] / display.width))
    except Exception as exc:
        if not isinstance(exc, ImageProblem):
            logger.exception("indexing photo %s failed", photo_id, extra={"photo_id": photo_id})
        photo_index_abandon(photo_id=photo_id, reason=_explain(exc))
        return "failed"
    if not _photo_faces_store(photo=photo, image=image, full_size=full_size, engine=engine.name, result=result):
        return "superseded"
    # Before any match: an opted-out face is marked and blurred in the served copies
    # (from the full-size original when a reduced scale was decoded: the boxes are in its pixels).
    try:
        marked = optout_faces_mark(event_id=photo.event_id, photo_ids=[photo.pk])
    except Exception as exc:
        # Not checked against the opt-outs (Rekognition unavailable): shown to nobody
        # until `reindex --failed` checks it.
        logger.exception("checking photo %s against opt-outs failed", photo_id, extra={"photo_id": photo_id})
        Photo.objects.filter(pk=photo_id).update(index_state=Photo.State.FAILED, index_error=_explain(exc))
        return "failed"
    if marked or photo.faces.filter(opted_out=True).exists():
        photo_copies_remake(photo=photo, image=image if image.size == full_size else None)
    try:
        photo_match(photo=photo)
    except Exception:
        # The faces are stored; only re-matching this photo against existing
        # selfies failed (e.g. the hosted engine is unavailable). `rematch` repairs it.
        logger.exception("re-matching photo %s failed", photo_id, extra={"photo_id": photo_id})
        return "indexed-unmatched"
    _batch_end_notify(photo.event_id)
    return "indexed"


def _batch_end_notify(event_id: int) -> None:
    """The last photo of a batch: subscribed attendees hear of their new photos, in one message each."""
    subscribed = Attendee.objects.filter(event_id=event_id).exclude(email="")
    if subscribed.exists() and not Photo.objects.filter(event_id=event_id).in_progress().exists():
        jobs.enqueue_new_photos_notify(event_id)


def _photo_faces_store(
    *, photo: Photo, image: Image.Image, full_size: tuple[int, int], engine: str, result: PhotoFaces
) -> bool:
    """Record the photo as indexed with these faces in place of its old ones, and the faces left out.

    Face boxes and the photo's size are in the original's pixels (full_size);
    `image` is the decoded picture, possibly at a reduced scale, for sharpness.

    False when the photo was reset (reindex) or deleted while we worked: a newer
    job owns it, and faces a hosted engine kept in this run belong to no row.
    """
    found = result.faces
    with transaction.atomic():
        indexed = (
            Photo.objects.claimed()
            .filter(pk=photo.pk)
            .update(
                index_state=Photo.State.INDEXED,
                face_count=len(found),
                faces_left_out=result.left_out_count,
                faces_left_out_reasons=result.left_out,
                width=full_size[0],
                height=full_size[1],
                indexed_at=Now(),  # the database clock: index.py compares these across workers
                claimed_at=None,
            )
        )
        if not indexed:
            jobs.enqueue_forget(photo.event_id, [(engine, face.external_id) for face in found])
            return False
        replaced = list(photo.faces.remote().values_list("engine", "external_id"))
        photo.faces.all().delete()
        scale = image.width / full_size[0]
        Face.objects.bulk_create(
            _face_row(photo=photo, image=image, scale=scale, engine=engine, face=face) for face in found
        )
    # Remote faces of the old index that this run did not keep again go too.
    kept = {face.external_id for face in found}
    jobs.enqueue_forget(photo.event_id, [(name, face_id) for name, face_id in replaced if face_id not in kept])
    return True


def _face_row(*, photo: Photo, image: Image.Image, scale: float, engine: str, face: FoundFace) -> Face:
    """A face row; `scale` takes its box from the original's pixels to `image`'s."""
    box = {side: round(getattr(face, side) * scale) for side in ("left", "top", "width", "height")}
    return Face(
        photo=photo,
        left=face.left,
        top=face.top,
        width=face.width,
        height=face.height,
        embedding=face.embedding.tobytes() if face.embedding is not None else b"",
        engine=engine,
        external_id=face.external_id,
        size=quality.face_size(face.width, face.height),
        sharpness=quality.face_sharpness(image, **box),
    )


def photo_index_abandon(*, photo_id: int, reason: str) -> None:
    """Record that this photo's index job failed, or was stopped from outside (timeout)."""
    Photo.objects.claimed().filter(pk=photo_id).update(
        index_state=Photo.State.FAILED, index_error=reason, claimed_at=None
    )


def _in_pixels_of(faces: list[FoundFace], *, scale: float) -> list[FoundFace]:
    """Face boxes found in a scaled copy, in the original photo's pixels."""
    if scale == 1.0:
        return faces
    return [
        dataclasses.replace(
            face,
            left=round(face.left * scale),
            top=round(face.top * scale),
            width=round(face.width * scale),
            height=round(face.height * scale),
        )
        for face in faces
    ]


def _photo_derivatives_make(*, photo: Photo, image: Image.Image) -> bool:
    """The served copies: EXIF-free, upright. Made once; reindexing keeps them.

    False when the photo was deleted meanwhile (its new files are removed again).
    """
    made = [field for field in (photo.display, photo.thumbnail) if not field]
    if made:
        image = branding.watermarked(image, photo.event)  # the copies only: the original stays as it came
    if not photo.display:
        _copy_save(
            photo.display, f"{photo.content_hash}-display.jpg", jpeg_file(image, max_side=settings.DISPLAY_MAX_SIDE)
        )
    if not photo.thumbnail:
        _copy_save(
            photo.thumbnail,
            f"{photo.content_hash}-thumb.jpg",
            jpeg_file(image, max_side=settings.THUMBNAIL_SIDE, quality=80),
        )
    # Recorded at once, so a later failure never leaves unreferenced files behind.
    if Photo.objects.filter(pk=photo.pk).update(display=photo.display.name, thumbnail=photo.thumbnail.name):
        return True
    for field in made:
        field.storage.delete(field.name)
    return False


def _copy_save(field: FieldFile, filename: str, content: ContentFile) -> None:
    """Save a served copy under its own name, replacing a leftover of an earlier run.

    The name comes from the photo's content hash, so a file already there belongs to
    this photo: a run killed after writing it but before recording it. Saving beside
    it would give a suffixed name and leave the leftover behind for good.
    """
    name = field.field.generate_filename(field.instance, filename)
    if field.storage.exists(name):
        field.storage.delete(name)
    field.save(filename, content, save=False)


def photo_match(*, photo: Photo) -> int:
    """Re-matching: record this photo for every enrolled selfie of its event that it shows."""
    engine = get_engine()
    if not isinstance(engine, HostedEngine):
        with transaction.atomic():
            event = _event_lock(photo.event_id)
            return 0 if event is None else event_decide(event=event, engine=engine.name, photo_id=photo.pk)
    searched_at = _database_now()
    found = selfies_near_photo(engine=engine, photo=photo)
    _matches_replace(
        previous=Match.objects.filter(photo=photo),
        searched_at=searched_at,
        matches=[Match(selfie_id=selfie_id, photo=photo, distance=d) for selfie_id, d in found.items()],
    )
    return len(found)


def _matches_replace(*, previous: QuerySet[Match], searched_at: datetime, matches: list[Match]) -> None:
    """Record these matches (of one photo or of one selfie) in place of the previous ones.

    Only previous matches older than the search are stale: one another job added
    while we searched is as true as ours (see the module docstring).
    """
    with transaction.atomic():
        # `previous` shares one side (the photo or the selfie) with every new match,
        # so "not both ids among the new ones" is "not found by this search".
        found = {"selfie_id__in": [m.selfie_id for m in matches], "photo_id__in": [m.photo_id for m in matches]}
        previous.filter(created_at__lt=searched_at).exclude(**found).delete()
        # created_at is the database's clock (Match.created_at's default).
        Match.objects.bulk_create(
            matches, update_conflicts=True, unique_fields=["selfie", "photo"], update_fields=["distance"]
        )


def _database_now() -> datetime:
    """The database's clock, which also stamps every match: workers' clocks may drift apart."""
    now = Now()
    sql, params = Query(Match).get_compiler(connection=connection).compile(now)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        value = cursor.fetchone()[0]
    # SQLite answers with text: the backend's converters make it an aware datetime.
    for convert in connection.ops.get_db_converters(now) + now.get_db_converters(connection):
        value = convert(value, now, connection)
    return value


# --- The event-level decision (embedding engines) --------------------------------


def event_rules(event: Event) -> rules.Rules:
    """The matching rules of an event: its own tolerance, else the server's settings."""
    return rules.Rules(
        tolerance=settings.FACE_TOLERANCE if event.face_tolerance is None else event.face_tolerance,
        merge_distance=settings.FACE_MERGE_DISTANCE,
        min_face_size=settings.FACE_MIN_QUALITY_SIZE,
        min_sharpness=settings.FACE_MIN_SHARPNESS,
        low_quality_tolerance=settings.FACE_LOW_QUALITY_TOLERANCE,
        probe_distance=settings.FACE_PROBE_DISTANCE,
        expansion_tolerance=settings.FACE_EXPANSION_TOLERANCE,
    )


def _event_lock(event_id: int) -> Event | None:
    """Serialise the event's decisions: call inside transaction.atomic().

    A decision reads every selfie and face of the event and rewrites the matches
    of the identities it concerns; two at once could each miss the other's rows
    (a take-over undone by a photo job that searched before the new selfie
    committed). PostgreSQL: a row lock on the event, FOR NO KEY UPDATE so that
    rows referring to the event (a new selfie, attendee or download) can still be
    inserted meanwhile: FOR UPDATE would make every attendee's upload wait for
    the decision in progress. SQLite: transactions are IMMEDIATE, so writers are
    serialised already (select_for_update is a no-op).
    """
    return Event.objects.select_for_update(no_key=True).filter(pk=event_id).first()


def event_decide(
    *,
    event: Event,
    engine: str,
    selfie_id: int | None = None,
    photo_id: int | None = None,
    photo_ids: list[int] | None = None,
) -> int:
    """Apply matching.rules after a selfie was enrolled, a photo indexed, or a selfie
    deleted (`photo_ids`: the photos it held); record the matches.

    Call inside the event lock. Decides again every identity the change can
    concern: the selfie's identity (and those it may have taken faces from), or
    the identities nearest the photos' faces (and those that had the photos). Each
    one's matches are replaced as a whole, so an attendee who lost a face to a
    nearer selfie loses that photo, and the next nearest attendee gains the faces
    of a deleted selfie. Returns how many matches those identities have.
    """
    chosen = event_rules(event)
    selfies = index.event_selfies(event.pk, engine, chosen)
    if not len(selfies.ids):
        return 0
    faces = index.event_faces(event.pk, engine)
    enrolled = set(selfies.ids.tolist())
    if selfie_id is not None:
        first = [selfies.label_of(selfie_id)] if selfie_id in enrolled else []
    else:
        photos = [photo_id] if photo_id is not None else list(photo_ids or [])
        owners = set()
        for photo in photos:
            owners |= index.photo_owners(photo_id=photo, engine=engine, selfies=selfies, chosen=chosen)
        had = Match.objects.filter(photo_id__in=photos).values_list("selfie_id", flat=True)
        first = sorted(owners | {selfies.label_of(s) for s in had if s in enrolled})
    recorded = 0
    decided = set(first)
    for label in first:
        photos = index.identity_photos(faces=faces, selfies=selfies, label=label, chosen=chosen)
        members = selfies.members(label)
        recorded += _identity_record(members=members, photos=photos)
        if selfie_id is None:
            continue
        # Whoever else had one of these photos may have lost a face to this identity:
        # decided again. One level is enough: losing a face changes nobody else's.
        others = Match.objects.filter(photo_id__in=list(photos)).exclude(selfie_id__in=members)
        other_selfies = others.order_by().values_list("selfie_id", flat=True).distinct()  # not a row per match
        for loser in sorted({selfies.label_of(s) for s in other_selfies if s in enrolled}):
            if loser not in decided:
                decided.add(loser)
                lost = index.identity_photos(faces=faces, selfies=selfies, label=loser, chosen=chosen)
                _identity_record(members=selfies.members(loser), photos=lost)
    return recorded


def photos_decide(*, event_id: int, photo_ids: list[int]) -> int:
    """A deleted selfie held these photos: each of their faces goes to whoever wins it
    now (the next nearest attendee, under the event's rules), at once rather than at
    the next rematch. Returns how many matches the identities decided have.

    Idempotent: a decision only reads the current rows. The deleted selfie's other
    signals forget its remote face; Rekognition may still name its user for a face
    until that job has run (see docs/rekognition.md).
    """
    photos = list(Photo.objects.filter(event_id=event_id, pk__in=photo_ids).indexed())
    engine = get_engine()
    if isinstance(engine, HostedEngine):
        return sum(photo_match(photo=photo) for photo in photos)
    with transaction.atomic():
        event = _event_lock(event_id)
        if event is None or not photos:
            return 0
        return event_decide(event=event, engine=engine.name, photo_ids=[photo.pk for photo in photos])


DISTANCE_NOISE = 0.005


def _identity_record(*, members: list[int], photos: dict[int, float]) -> int:
    """The identity's selfies show exactly these photos among the indexed ones: others removed,
    these added or updated (existing rows keep their creation time: they are not news).

    Matches of photos being indexed again stay until those photos' own jobs decide,
    so a reindex never empties a gallery for a while (nor sends "new photos" mail).

    Only what changed is written, and what is held is read per photo, not per row:
    most decisions confirm most rows (a new selfie of a known face adds its own rows),
    and an identity of many selfies holds members x photos rows. A distance that
    moved by less than DISTANCE_NOISE (a new selfie of the identity a hair nearer) is
    not a change: it only orders the admin's list.
    """
    held = {
        row["photo_id"]: row
        for row in Match.objects.filter(selfie_id__in=members)
        .order_by()
        .values("photo_id", "photo__index_state")
        .annotate(count=Count("id"), nearest=Min("distance"), farthest=Max("distance"))
    }
    stale = [p for p, row in held.items() if p not in photos and row["photo__index_state"] == Photo.State.INDEXED]
    if stale:
        Match.objects.filter(selfie_id__in=members, photo_id__in=stale).delete()
    # Members with no match yet (a new selfie of this face): on a photo that the
    # others hold at the right distance, only theirs are missing.
    holding = set(Match.objects.filter(selfie_id__in=members).order_by().values_list("selfie_id", flat=True).distinct())
    fresh = [s for s in members if s not in holding]
    writes = []
    for p, distance in photos.items():
        row = held.get(p)
        if row is None or max(abs(row["nearest"] - distance), abs(row["farthest"] - distance)) > DISTANCE_NOISE:
            writes += [Match(selfie_id=s, photo_id=p, distance=float(distance)) for s in members]
        elif row["count"] == len(members) - len(fresh):
            writes += [Match(selfie_id=s, photo_id=p, distance=float(distance)) for s in fresh]
        elif row["count"] < len(members):  # some other gap: every member's row, to be sure
            writes += [Match(selfie_id=s, photo_id=p, distance=float(distance)) for s in members]
    Match.objects.bulk_create(
        writes, update_conflicts=True, unique_fields=["selfie", "photo"], update_fields=["distance"]
    )
    return len(members) * len(photos)


def _selfie_decide(*, selfie: Selfie, engine: str) -> str:
    """The enrolled selfie's event-level decision, recorded with its final state in one transaction."""
    with transaction.atomic():
        event = _event_lock(selfie.event_id)
        done = (
            Selfie.objects.claimed()
            .filter(pk=selfie.pk)
            .update(match_state=Selfie.State.DONE, matched_at=Now(), claimed_at=None)
        )
        if event is None or not done:
            return "superseded"
        event_decide(event=event, engine=engine, selfie_id=selfie.pk)
    return "done"


# --- Opt-outs -------------------------------------------------------------------


def optout_faces_mark(*, event_id: int, photo_ids: list[int] | None = None) -> set[int]:
    """Record which faces of the event (or of these photos) belong to an opted-out person.

    Returns the photos whose marks changed: their served copies must be made
    again, and their matches decided again. With dlib, matching does not read
    these marks (it checks the templates itself, so it is never a step behind);
    blurring and the admin do. Rekognition keeps no vectors to check: its searches
    leave the marked faces out (see `_hidden_faces`).
    """
    engine = get_engine()
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return set()
    faces = Face.objects.filter(photo__event_id=event_id)
    if photo_ids is not None:
        faces = faces.filter(photo_id__in=photo_ids)
    if isinstance(engine, EmbeddingEngine):
        rows = list(faces.embedded(engine=engine.name).values_list("id", "photo_id", "embedding", "opted_out"))
        if not rows:
            return set()
        hidden = index.opted_out_mask(
            index._matrix([row[2] for row in rows]),
            index.optout_templates(event_id, engine.name),
            tolerance=event_rules(event).tolerance,
        ).tolist()
    elif isinstance(engine, HostedEngine):
        rows = list(faces.remote(engine=engine.name).values_list("id", "photo_id", "external_id", "opted_out"))
        if not rows:
            return set()
        theirs = _optout_remote_faces(engine=engine, event=event)
        hidden = [row[2] in theirs for row in rows]
    else:
        return set()
    changed = [(row[0], row[1], now) for row, now in zip(rows, hidden, strict=True) if row[3] != now]
    for flag in (True, False):
        Face.objects.filter(pk__in=[face_id for face_id, _, now in changed if now is flag]).update(opted_out=flag)
    return {photo_id for _, photo_id, _ in changed}


def _optout_remote_faces(*, engine: HostedEngine, event: Event) -> set[str]:
    """The kept photo faces that an opt-out's kept face finds: theirs, whoever else is near them.

    One search per opt-out (none when the event has none). At the looser of the event's
    similarity and the server's, as dlib uses the looser tolerance: a stricter event
    never shows more of someone who said no.
    """
    templates = Selfie.objects.filter(event=event).optouts().remote(engine=engine.name)
    similarity = settings.AWS_REKOGNITION_SIMILARITY
    if event.face_similarity is not None:
        similarity = min(similarity, event.face_similarity)
    theirs: set[str] = set()
    for face_id in templates.values_list("external_id", flat=True):
        theirs |= engine.photo_faces_near_face(event_id=event.pk, face_id=face_id, similarity=similarity)
    return theirs


def _hidden_faces(*, event_id: int, engine: str) -> frozenset[str]:
    """The kept photo faces of opted-out people (marked by optout_faces_mark): nobody's match."""
    faces = Face.objects.filter(photo__event_id=event_id, opted_out=True).remote(engine=engine)
    return frozenset(faces.values_list("external_id", flat=True))


def photo_copies_remake(*, photo: Photo, image: Image.Image | None = None) -> bool:
    """Make the photo's served copies again, its opted-out faces blurred; the original is untouched.

    Crash-safe, so the row always names files that exist: the new copies get new
    names (no cache or presigned URL serves the old copy after this either), the
    row is switched to them in a transaction, and the old copies are deleted only
    once it commits. A run killed half-way leaves unnamed copies behind; the next
    run on the photo deletes them. False when the photo was deleted, or its copies
    changed since `photo` was read (a reindex or another run: nothing is written).
    """
    if image is None:
        with photo.original.open("rb") as original:
            image = load_rgb(original)
    boxes = list(photo.faces.filter(opted_out=True).values_list("left", "top", "width", "height"))
    # Blurred in the original's pixels (where the boxes are), then made as photo_index
    # makes its copies: scaled to the display size, with the event's watermark.
    shown = faces_blurred(image, boxes) if boxes else image
    shown = branding.watermarked(fitted(shown, settings.DISPLAY_MAX_SIDE), photo.event)
    display = jpeg_file(shown, max_side=settings.DISPLAY_MAX_SIDE)
    thumbnail = jpeg_file(shown, max_side=settings.THUMBNAIL_SIDE, quality=80)
    old = (photo.display.name, photo.thumbnail.name)
    tag = secrets.token_hex(4)
    written: list[str] = []
    try:
        with transaction.atomic():
            # Locked, so two runs never switch one photo at once (SQLite: writers are serialised).
            now = Photo.objects.select_for_update().filter(pk=photo.pk).values_list("display", "thumbnail").first()
            if now != old:
                return False
            _copies_leftovers_delete(photo=photo, keep=old)
            photo.display.save(f"{photo.content_hash}-{tag}-display.jpg", display, save=False)
            written.append(photo.display.name)
            photo.thumbnail.save(f"{photo.content_hash}-{tag}-thumb.jpg", thumbnail, save=False)
            written.append(photo.thumbnail.name)
            Photo.objects.filter(pk=photo.pk).update(display=photo.display.name, thumbnail=photo.thumbnail.name)
            jobs.enqueue_files_delete([name for name in old if name])  # on commit
    except BaseException:
        # The row still names the old copies, which exist: the new ones go.
        for name in written:
            photo.display.storage.delete(name)
        photo.display.name, photo.thumbnail.name = old
        raise
    return True


def _copies_leftovers_delete(*, photo: Photo, keep: tuple[str, str]) -> None:
    """Delete this photo's served copies that its row does not name: left by a run killed
    before its switch (new copies) or after it (old copies never deleted). Call under the
    photo's lock. Not while the row names no copies: the index job is making them."""
    if not all(keep):
        return
    folder = posixpath.dirname(keep[0])
    storage = photo.display.storage
    try:
        _, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in files:
        path = posixpath.join(folder, name)
        if name.startswith(f"{photo.content_hash}-") and path not in keep:
            storage.delete(path)


def optout_apply(*, event_id: int) -> int:
    """After an opt-out was added or withdrawn: mark the faces, blur or unblur the copies,
    and decide again who is in each photo whose marks changed. Returns how many photos changed."""
    changed = optout_faces_mark(event_id=event_id)
    for photo in Photo.objects.filter(pk__in=changed).indexed():
        try:
            photo_copies_remake(photo=photo)
        except ImageProblem:
            logger.warning("photo %s: original unreadable, served copies not blurred", photo.pk)
        photo_match(photo=photo)
    return len(changed)


def _optout_enrolled(*, selfie: Selfie) -> str:
    """An opt-out's template is stored: hide its faces everywhere, then record it as done.

    No Match rows: the template finds photos for nobody, not even its owner.
    """
    optout_apply(event_id=selfie.event_id)
    done = (
        Selfie.objects.claimed()
        .filter(pk=selfie.pk)
        .update(match_state=Selfie.State.DONE, matched_at=Now(), claimed_at=None)
    )
    return "done" if done else "superseded"


# --- Selfies ------------------------------------------------------------------


def selfie_match(*, selfie_id: int) -> str:
    """Find the selfie's face (once) and record every photo of the event that shows it."""
    if not Selfie.objects.claim(pk=selfie_id):
        return "skipped"
    selfie = Selfie.objects.get(pk=selfie_id)
    engine = get_engine()
    try:
        optout = Attendee.objects.filter(pk=selfie.attendee_id, opted_out=True).exists()
        enrolled = selfie.engine == engine.name and bool(selfie.embedding or selfie.external_id)
        if not enrolled and not _selfie_enroll(engine=engine, selfie=selfie):
            return "superseded"
        if optout:
            try:
                return _optout_enrolled(selfie=selfie)
            except FaceGone as gone:
                if gone.args[:1] != (selfie.external_id,):
                    raise
                # Its face was deleted from the collection outside our jobs: enrolled again.
                logger.warning("opt-out %s: its remote face is gone, enrolling it again", selfie_id)
                if not _selfie_enroll(engine=engine, selfie=selfie):
                    return "superseded"
                return _optout_enrolled(selfie=selfie)
        if not isinstance(engine, HostedEngine):
            return _selfie_decide(selfie=selfie, engine=engine.name)
        searched_at = _database_now()
        try:
            found = photos_near_selfie(engine=engine, selfie=selfie)
        except FaceGone:
            # The hosted engine lost the face (deleted outside our jobs): enroll
            # the stored selfie again rather than failing it for good.
            logger.warning("selfie %s: its remote face is gone, enrolling it again", selfie_id)
            if not _selfie_enroll(engine=engine, selfie=selfie):
                return "superseded"
            found = photos_near_selfie(engine=engine, selfie=selfie)
    except Exception as exc:
        if not isinstance(exc, ImageProblem):
            logger.exception("matching selfie %s failed", selfie_id, extra={"selfie_id": selfie_id})
        # Attendees read this text: only our own messages, never internals.
        selfie_match_abandon(selfie_id=selfie_id, message=str(exc) if isinstance(exc, ImageProblem) else None)
        if isinstance(exc, ImageProblem):
            # No usable face, ever: the picture is not kept (a transient failure keeps it for a retry).
            selfie_image_drop(selfie_id=selfie_id)
        return "failed"
    with transaction.atomic():
        done = (
            Selfie.objects.claimed()
            .filter(pk=selfie_id)
            .update(match_state=Selfie.State.DONE, matched_at=Now(), claimed_at=None)
        )
        if not done:
            return "superseded"
        _matches_replace(
            previous=Match.objects.filter(selfie_id=selfie_id),
            searched_at=searched_at,
            matches=[Match(selfie_id=selfie_id, photo_id=photo_id, distance=d) for photo_id, d in found.items()],
        )
    return "done"


def _selfie_enroll(*, engine: FaceEngine, selfie: Selfie) -> bool:
    """Find the selfie's face and store it; False when the selfie was deleted meanwhile."""
    with selfie.image.open("rb") as stored:
        # Decoded at reduced scale where the format allows (JPEG): a selfie
        # never needs more than SELFIE_MAX_SIDE pixels a side.
        image = load_rgb(stored, draft_side=settings.SELFIE_MAX_SIDE, max_pixels=settings.SELFIE_MAX_PIXELS)
    if selfie.turned_image:
        # A camera-only event's selfie: the pose check first (ImageProblem fails the selfie,
        # and both pictures go). The turned picture goes once it passed: a later delivery of
        # this job then enrolls without it, as the check was passed.
        with selfie.turned_image.open("rb") as stored:
            turned = load_rgb(stored, draft_side=settings.SELFIE_MAX_SIDE, max_pixels=settings.SELFIE_MAX_PIXELS)
        pose.pose_check(front=image, turned=turned)
        selfie_turned_drop(selfie_id=selfie.pk)
    if selfie_is_original(selfie):
        # Stored as uploaded (gallery.services.selfie_create): keep only a small
        # metadata-free copy from now on, and enroll exactly what is kept.
        if not selfie_copy_store(selfie=selfie, image=image):
            return False
        with selfie.image.open("rb") as stored:
            image = load_rgb(stored)
    face = engine.enroll_selfie(event_id=selfie.event_id, selfie_id=selfie.pk, image=image)
    if face is None:
        raise ImageProblem(NO_FACE_MESSAGE)
    # Re-enrolled with another engine (or its remote face was lost): the old remote face goes.
    if selfie.external_id and selfie.external_id != face.external_id:
        jobs.enqueue_forget(selfie.event_id, [(selfie.engine, selfie.external_id)])
    selfie.embedding = face.embedding.tobytes() if face.embedding is not None else b""
    selfie.external_id = face.external_id
    selfie.engine = engine.name
    # Committed before searching, so concurrent photo jobs can see it.
    if not Selfie.objects.filter(pk=selfie.pk).update(
        embedding=selfie.embedding, external_id=selfie.external_id, engine=selfie.engine
    ):
        # Deleted while we enrolled it: its face must not outlive it.
        jobs.enqueue_forget(selfie.event_id, [(engine.name, face.external_id)])
        return False
    return True


def selfie_match_abandon(*, selfie_id: int, message: str | None = None) -> None:
    """Record that this selfie's match job failed, or was stopped from outside (timeout).

    `message` is shown to the attendee; without one, a generic message (never internals).
    """
    Selfie.objects.claimed().filter(pk=selfie_id).update(
        match_state=Selfie.State.FAILED, match_error=message or SELFIE_FAILED_MESSAGE, claimed_at=None
    )


def image_search(*, event: Event, image: Image.Image, tolerance: float | None = None) -> list[tuple[Photo, float]]:
    """Photos of the event showing the largest face in the image, best first."""
    found = photos_near_image(engine=get_engine(), event_id=event.pk, image=image, tolerance=tolerance)
    photos = Photo.objects.in_bulk(list(found))
    return sorted(((photos[pk], d) for pk, d in found.items() if pk in photos), key=lambda item: item[1])


# --- Searches: our rows give the engine its candidates and judge its answers ---


def remote_person(*, attendee_id: int) -> str:
    """The id a hosted engine groups an attendee's selfie faces under (a Rekognition UserId)."""
    return f"attendee-{attendee_id}"


def photos_near_selfie(*, engine: FaceEngine, selfie: Selfie, tolerance: float | None = None) -> dict[int, float]:
    """Photo id -> best distance, for the event's indexed photos showing the enrolled selfie's face."""
    if isinstance(engine, HostedEngine):
        person_id = remote_person(attendee_id=selfie.attendee_id)
        # Every run, not only at enrollment: selfies enrolled before people
        # existed join theirs on `rematch` (a face already there is a no-op).
        engine.person_add_face(event_id=selfie.event_id, person_id=person_id, face_id=selfie.external_id)
        found = engine.photos_near_face(
            event_id=selfie.event_id,
            face_id=selfie.external_id,
            person_id=person_id,
            tolerance=tolerance,
            similarity=_event_similarity(event_id=selfie.event_id),
            hidden=_hidden_faces(event_id=selfie.event_id, engine=engine.name),
        )
        if found.limit_reached != selfie.search_limit_reached:
            Selfie.objects.filter(pk=selfie.pk).update(search_limit_reached=found.limit_reached)
        return _indexed_only(event_id=selfie.event_id, found=found.distances)
    return index.photos_near(event_id=selfie.event_id, engine=engine.name, probe=selfie.vector(), tolerance=tolerance)


def selfies_near_photo(*, engine: FaceEngine, photo: Photo, tolerance: float | None = None) -> dict[int, float]:
    """Selfie id -> best distance, for the event's enrolled selfies seen in this indexed photo."""
    if not isinstance(engine, HostedEngine):
        return index.selfies_near(photo=photo, engine=engine.name, tolerance=tolerance)
    # A photo face goes to one person; their match is recorded for each of their enrolled selfies.
    people: dict[str, list[int]] = {}
    enrolled = Selfie.objects.filter(event_id=photo.event_id).searching().remote(engine=engine.name)
    for selfie_id, attendee_id in enrolled.values_list("id", "attendee_id"):
        people.setdefault(remote_person(attendee_id=attendee_id), []).append(selfie_id)
    if not people:
        return {}  # nobody to find: no remote call, no cost
    # An opted-out person's faces are nobody's (marked before this photo is matched).
    shown = photo.faces.remote(engine=engine.name).shown().order_by("pk")
    face_ids = list(shown.values_list("external_id", flat=True))
    found = engine.people_near_faces(
        event_id=photo.event_id,
        face_ids=face_ids,
        tolerance=tolerance,
        similarity=_event_similarity(event_id=photo.event_id),
    )
    # A deleted attendee's user may linger in the collection until its forget job runs.
    return {selfie_id: d for person_id, d in found.items() for selfie_id in people.get(person_id, [])}


def photos_near_image(
    *, engine: FaceEngine, event_id: int, image: Image.Image, tolerance: float | None = None
) -> dict[int, float]:
    """Photo id -> best distance, for the event's indexed photos showing the largest face in the image."""
    if isinstance(engine, HostedEngine):
        found = engine.photos_near_image(
            event_id=event_id,
            image=image,
            tolerance=tolerance,
            similarity=_event_similarity(event_id=event_id),
            hidden=_hidden_faces(event_id=event_id, engine=engine.name),
        )
        return _indexed_only(event_id=event_id, found=found)
    probe = engine.probe(image) if isinstance(engine, EmbeddingEngine) else None
    if probe is None:
        return {}
    return index.photos_near(event_id=event_id, engine=engine.name, probe=probe, tolerance=tolerance)


def _event_similarity(*, event_id: int) -> float | None:
    """The event's own threshold for hosted engines (a similarity, 0-100); None: the server's setting."""
    return Event.objects.filter(pk=event_id).values_list("face_similarity", flat=True).first()


def _indexed_only(*, event_id: int, found: dict[int, float]) -> dict[int, float]:
    # Faces of photos deleted or being reindexed may still be in a hosted
    # collection; a Match row for them would break on its foreign key.
    indexed = Photo.objects.filter(event_id=event_id, pk__in=found).indexed()
    return {pk: found[pk] for pk in indexed.values_list("pk", flat=True)}
