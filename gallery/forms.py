from __future__ import annotations

from django import forms
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


def consent_field(label: str | Promise, *, refused: str | Promise) -> forms.BooleanField:
    """A box the person must tick themselves; `refused` says what is not done without it."""
    return forms.BooleanField(label=label, error_messages={"required": refused})


def face_image_field(label: str | Promise) -> forms.FileField:
    """A photo of the person's own face. Size and content are judged by the service that
    stores it (services.selfie_create, optout_create), for every caller."""
    return forms.FileField(
        label=label,
        error_messages={"required": _("Please choose or take a selfie."), "empty": _("That file is empty.")},
    )


# The attendee templates write these inputs out themselves (camera button, consent
# box); the forms validate and carry the labels and messages.
class CodeForm(forms.Form):
    code = forms.CharField(label=_("Event code"), max_length=64)


class SelfieForm(forms.Form):
    image = face_image_field(_("Your selfie"))
    consent = consent_field(
        _(
            "I agree that Trouvaille computes a biometric template of my face from this selfie, "
            "only to find me in this event's photos. I can delete it at any time."
        ),
        refused=_("Please agree to the use of your selfie to find your photos."),
    )


CAMERA_REQUIRED = _("This event accepts only selfies taken with the camera on this page, in two pictures.")
EMPTY = _("That file is empty.")


class CameraSelfieForm(SelfieForm):
    """A camera-only event's selfie: the page's camera sends a second picture, head turned.

    Required here, so a selfie posted without the page's camera (a file sent by
    hand) is refused; the job's pose check then compares the two (matching.pose).
    """

    image = forms.FileField(label=_("Your selfie"), error_messages={"required": CAMERA_REQUIRED, "empty": EMPTY})
    turned = forms.FileField(
        label=_("Your selfie, head turned"), error_messages={"required": CAMERA_REQUIRED, "empty": EMPTY}
    )


class OptOutForm(forms.Form):
    """The same fields as the selfie form; the consent is to a template used only to hide the person."""

    image = face_image_field(_("A photo of your face"))
    consent = consent_field(
        _(
            "I agree that Trouvaille computes a biometric template of my face from this photo, "
            "only to hide me in this event's photos. I can withdraw it at any time with my private link."
        ),
        refused=_("Please agree to the use of your photo to hide you."),
    )


class EmailForm(forms.Form):
    email = forms.EmailField(label=_("Your e-mail address"), max_length=254)
    consent = consent_field(
        _(
            "E-mail me my private link, and once when new photos of me are found at this event. "
            "Each message has a link to stop."
        ),
        refused=_("Please agree to receive these e-mails, or leave the address out."),
    )


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        # Each file is judged by the import service, so one empty or broken
        # file is reported on its own instead of failing the whole batch.
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        return [item for item in files if item is not None]


class PhotoUploadForm(forms.Form):
    files = MultipleFileField(
        label=_("Photos or zip archives"),
        required=False,
        widget=MultipleFileInput(attrs={"accept": "image/*,.zip,application/zip"}),
    )
    folder = MultipleFileField(
        label=_("Or a whole folder"),
        required=False,
        widget=MultipleFileInput(attrs={"webkitdirectory": True, "directory": True}),
    )

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("files") and not cleaned.get("folder"):
            raise forms.ValidationError(_("Choose photos, zip archives or a folder to upload."))
        return cleaned


class OptOutRegisterForm(forms.Form):
    """Organizers register opt-outs for people who refused photos: one photo each."""

    files = MultipleFileField(
        label=_("One photo of each person"),
        widget=MultipleFileInput(attrs={"accept": "image/*,.heic,.heif"}),
    )
    consent = forms.BooleanField(
        label=_(
            "Each of these people asked not to be shown, and agreed to a template of their face "
            "being used only to hide them in this event's photos."
        )
    )

    def clean_files(self):
        files = self.cleaned_data["files"]
        if not files:
            raise forms.ValidationError(_("Choose at least one photo."))
        return files
