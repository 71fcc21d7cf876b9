"""dlib's face embedding network run by numpy (matching/engines/resnet.py): dlib's
embeddings on real faces, a model file it does not know refused, and the engine
falling back to dlib's own encoder whenever the numpy network is not usable."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings
from PIL import Image

from matching.engines import resnet
from tests.conftest import LABELS, ROOT, SAMPLES

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # face_recognition_models imports pkg_resources
    import face_recognition_models

MODEL = face_recognition_models.face_recognition_model_location()
TOLERANCE = 1e-4  # per component, and for the distance between two faces


def _dlib_engine():
    from matching.engines.dlib import DlibEngine

    return DlibEngine()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    with open(MODEL, "rb") as file:
        return file.read()


# The parser


def test_parser_reads_the_installed_model(model_bytes: bytes) -> None:
    network = resnet.parse(model_bytes)
    convolutions = [layer for layer in network.layers if isinstance(layer, resnet.Conv)]
    assert len(convolutions) == 29  # ResNet-29: 1 + 14 blocks of 2
    assert network.means.tolist() == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    assert network.layers[-1].weights.shape == (256, 128)


def _renamed_layer(data: bytes) -> bytes:
    return data.replace(b"relu_", b"relU_", 1)


def _wrong_size(data: bytes) -> bytes:
    """The first convolution's parameter count (4736 = 32*3*7*7 + 32) plus one."""
    return data.replace(b"con_4\x01\x02\x02\x80\x12", b"con_4\x01\x02\x02\x81\x12", 1)


def _wrong_input(data: bytes) -> bytes:
    """input_rgb_image_sized<151> instead of <150>."""
    start = data.index(b"input_rgb_image_sized")
    at = data.index(b"\x01\x96\x01\x96", start)
    return data[:at] + b"\x01\x97" + data[at + 2 :]


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-in-the-middle"),
        pytest.param(lambda data: data[:-1], id="last-byte-missing"),
        pytest.param(lambda data: data + b"\x00", id="trailing-byte"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(_renamed_layer, id="renamed-layer"),
        pytest.param(_wrong_size, id="wrong-parameter-count"),
        pytest.param(_wrong_input, id="wrong-input-size"),
    ],
)
def test_parser_refuses_an_altered_file(model_bytes: bytes, alter) -> None:
    altered = alter(model_bytes)
    assert altered != model_bytes
    with pytest.raises(resnet.ModelFormatError):
        resnet.parse(altered)


# Equal to dlib on real faces


def _sample_faces() -> list[tuple[str, np.ndarray, list[tuple[int, int, int, int]]]]:
    import face_recognition

    found = []
    for name in sorted(LABELS):
        pixels = face_recognition.load_image_file(SAMPLES / name)
        boxes = face_recognition.face_locations(pixels, number_of_times_to_upsample=1)
        if boxes:
            found.append((name, pixels, boxes))
    return found


@pytest.mark.dlib
def test_numpy_embeddings_equal_dlibs_on_every_sample_face() -> None:
    import face_recognition

    engine = _dlib_engine()
    assert engine._embedder is not None  # FACE_EMBEDDER=numpy is the default
    ours, theirs = [], []
    for name, pixels, boxes in _sample_faces():
        expected = face_recognition.face_encodings(pixels, boxes, num_jitters=1, model="small")
        got = engine._embed(pixels, boxes)
        assert np.abs(got - np.array(expected)).max() <= TOLERANCE, name
        ours.extend(got)
        theirs.extend(expected)
    assert len(ours) >= 25  # every labelled face of the sample photos
    ours_distances = np.linalg.norm(np.array(ours)[:, None] - np.array(ours)[None], axis=2)
    theirs_distances = np.linalg.norm(np.array(theirs)[:, None] - np.array(theirs)[None], axis=2)
    assert np.abs(ours_distances - theirs_distances).max() <= TOLERANCE


@pytest.mark.dlib
def test_detect_gives_the_same_faces_and_embeddings_with_either_embedder() -> None:
    image = Image.open(SAMPLES / "groups/obama_and_biden.jpg").convert("RGB")
    numpy_engine = _dlib_engine()
    with override_settings(FACE_EMBEDDER="dlib"):
        dlib_engine = _dlib_engine()
    assert numpy_engine._embedder is not None and dlib_engine._embedder is None
    ours, theirs = numpy_engine.detect(image), dlib_engine.detect(image)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs, strict=True):
        assert (a.left, a.top, a.width, a.height) == (b.left, b.top, b.width, b.height)
        assert np.abs(a.embedding - b.embedding).max() <= TOLERANCE


@pytest.mark.dlib
@pytest.mark.parametrize("careful", [{"jitter": 2}, {"landmarks": "large"}])
def test_jittered_or_68_point_encodings_keep_dlibs_encoder(monkeypatch: pytest.MonkeyPatch, careful: dict) -> None:
    engine = _dlib_engine()
    image = Image.open(SAMPLES / "people/biden/biden2.jpg").convert("RGB")
    calls = []
    embed = engine._embed
    monkeypatch.setattr(engine, "_embed", lambda *args: calls.append(args) or embed(*args))
    assert len(engine.detect(image)) == 1 and len(calls) == 1  # the numpy network, by default
    (face,) = engine.detect(image, **careful)
    assert len(calls) == 1  # not called again
    assert face.embedding.shape == (128,)


# Falling back to dlib's encoder


@pytest.mark.dlib
@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda data: resnet.parse(data[:-100]), id="truncated-file"),
        pytest.param(lambda data: resnet.parse(_renamed_layer(data)), id="altered-file"),
        pytest.param(lambda data: resnet.load(ROOT / "no-such-model.dat"), id="missing-file"),
    ],
)
def test_engine_falls_back_to_dlibs_encoder_when_the_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, model_bytes: bytes, broken
) -> None:
    import face_recognition

    monkeypatch.setattr(resnet, "installed_network", lambda: broken(model_bytes))
    engine = _dlib_engine()
    assert engine._embedder is None
    assert "using dlib's encoder" in caplog.text
    image = Image.open(SAMPLES / "people/biden/biden2.jpg").convert("RGB")
    (face,) = engine.detect(image)
    pixels = np.asarray(image)
    box = (face.top, face.left + face.width, face.top + face.height, face.left)
    (expected,) = face_recognition.face_encodings(pixels, [box], num_jitters=1, model="small")
    assert np.array_equal(face.embedding, np.asarray(expected, dtype=np.float32))


@pytest.mark.dlib
def test_engine_falls_back_when_the_numpy_network_disagrees_with_dlib(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, model_bytes: bytes
) -> None:
    network = resnet.parse(model_bytes)
    fc = network.layers[-1]
    skewed = resnet.Network(network.means, (*network.layers[:-1], resnet.Fc(fc.weights * np.float32(1.001))))
    monkeypatch.setattr(resnet, "installed_network", lambda: skewed)
    assert _dlib_engine()._embedder is None
    assert "away from dlib's embedding" in caplog.text


# Settings


def _run(code: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OPENBLAS_", "FACE_"))}
    env = {**keep, "DJANGO_SETTINGS_MODULE": "config.settings", **extra}
    return subprocess.run([sys.executable, *code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_an_unknown_embedder_refuses_to_start() -> None:
    result = _run(["manage.py", "check"], FACE_EMBEDDER="numpi")
    assert result.returncode != 0
    assert "FACE_EMBEDDER='numpi'" in result.stderr


# What OpenBLAS itself says: numpy's wheel bundles it as scipy-openblas.
_OPENBLAS_THREADS = (
    "import ctypes, glob, os, numpy; "
    "lib = ctypes.CDLL(glob.glob(os.path.dirname(numpy.__file__) + '.libs/libscipy_openblas*.so')[0]); "
    "print(lib.scipy_openblas_get_num_threads64_())"
)


def test_processes_started_by_manage_py_run_openblas_on_one_thread() -> None:
    if not list(Path(np.__file__).parent.with_name("numpy.libs").glob("libscipy_openblas*.so")):
        pytest.skip("this numpy does not bundle scipy-openblas")
    if (os.cpu_count() or 1) > 1:  # without the settings, OpenBLAS takes every core
        assert _run(["-c", _OPENBLAS_THREADS]).stdout.split()[-1] != "1"
    result = _run(["manage.py", "shell", "-v", "0", "-c", _OPENBLAS_THREADS])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "1"
    # An operator's own value wins.
    result = _run(["manage.py", "shell", "-v", "0", "-c", _OPENBLAS_THREADS], OPENBLAS_NUM_THREADS="2")
    assert result.stdout.split()[-1] == "2"
