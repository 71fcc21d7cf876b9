"""Why an imported file was refused: a stable code and its values, worded when read.

An upload's record keeps its rejections for weeks; the organizer may read it in
another language than the one the import job ran in (a job has none). So the
record stores the code and values (`Reason.as_json`), and the page words them in
the reader's language (`rejection_text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.template.defaultfilters import filesizeformat
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

from gallery import images

MESSAGES = {
    "too-large": _("larger than %(size)s"),
    "empty": _("empty file"),
    "not-image": images.NOT_READABLE,
    "corrupt": images.CORRUPT,
    "format": images.FORMAT_UNSUPPORTED,
    "too-many-pixels": images.TOO_MANY_PIXELS,
    "bad-zip": _("not a valid zip archive"),
    "truncated-zip": _("not a valid zip archive (truncated, or not a zip from its start)"),
    "too-many-members": _("more than %(count)s files in one archive"),
    "encrypted": _("encrypted archive members are not supported"),
    "nested-archive": _("archives inside archives are not imported"),
    "unreadable-member": _("unreadable in the archive (%(detail)s)"),
    "missing": _("no such file or folder"),
    "not-regular": _("not a regular file (a pipe, device or socket)"),
    "unreadable": _("cannot be read (%(detail)s)"),
}


@dataclass(frozen=True)
class Reason:
    """One of MESSAGES with its values; str() words it in the active language."""

    code: str
    params: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in MESSAGES:
            raise ValueError(f"Unknown rejection code {self.code!r}.")

    def __str__(self) -> str:
        values = dict(self.params)
        # Numbers are formatted when read, the way the reader's language writes them.
        if "size" in values:
            values["size"] = filesizeformat(values["size"])
        for name in ("count", "pixels"):
            if name in values:
                values[name] = number_format(values[name], force_grouping=True)
        return str(MESSAGES[self.code]) % values if values else str(MESSAGES[self.code])

    @classmethod
    def of_image_problem(cls, problem: images.ImageProblem) -> Reason:
        return cls(problem.code, problem.params)


def rejection_json(name: str, reason: Reason) -> list[object]:
    """How an upload's record stores one rejection: [file name, code, values]."""
    return [name, reason.code, reason.params]


def rejection_text(entry: list[object]) -> tuple[str, str]:
    """(file name, reason in the active language) of a stored rejection.

    Records made before codes were stored hold [name, English text]: shown as they are.
    """
    if len(entry) == 2:
        return str(entry[0]), str(entry[1])
    name, code, params = entry
    if code not in MESSAGES:  # a code a later version dropped: never a crash on an old record
        return str(name), str(code)
    return str(name), str(Reason(str(code), dict(params)))  # type: ignore[arg-type]
