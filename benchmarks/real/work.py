"""The two real workloads, written once for mpserver's examples and every peer's config.

Every server of ``benchmarks/real_models.py`` imports this module, so that the
same work is served everywhere.  Nothing is downloaded at run time: the OCR
models are the ones the ``rapidocr`` wheel bundles (PP-OCRv6 small detection and
recognition ONNX files under ``rapidocr/models/``), the tabular model is trained
at start-up on scikit-learn's bundled ``load_digits``.

**W1, OCR** (``ocr``): a PNG image of 1-3 lines of text drawn with Pillow from a
fixed seed (:func:`ocr_samples`) goes through two stages: :class:`OcrDetect`
(text detection: the PNG in, the line crops out, top to bottom) and
:class:`OcrRecognise` (recognition: the crops in, the text out, one line per
crop, joined by ``\\n``).  :func:`ocr_text_ok` compares an answer with the text
that was drawn (case and spaces ignored).  No batching.

**W2, tabular scoring** (``digits``): a ``HistGradientBoostingClassifier``
trained at start-up on ``load_digits`` (fixed ``random_state``); one request is
the JSON ``{"row": [64 floats]}``, the answer ``{"label": int}``.  **W2b**
(``digits-onnx``): the same model converted with ``skl2onnx`` and run in ONNX
Runtime.  Both batch (:data:`BATCH_SIZE`, :data:`BATCH_WAIT`): :class:`Digits`
scores a list of bodies at once.  A body with ``"sleep": S`` makes the worker
sleep S seconds first (the stuck-request failure round).

Every worker runs with one thread of compute: the servers are started with
``OMP_NUM_THREADS=1`` (:data:`THREAD_ENV`), and the ONNX Runtime sessions here
are made with one intra-op and one inter-op thread.

Heavy imports (numpy, scikit-learn, onnxruntime, rapidocr, Pillow) happen
inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import io
import json
import random
import time
from typing import Any

WORKLOADS = ('ocr', 'digits', 'digits-onnx')
#: p99 latency target per workload, milliseconds.
SLO_MS = {'ocr': 500.0, 'digits': 20.0, 'digits-onnx': 20.0}
#: The batching knobs of the batched workloads (W2, W2b); W1 does not batch.
BATCH_SIZE = 32
BATCH_WAIT = 0.005
#: Set in every server's environment (also MKL/OpenBLAS): one compute thread per worker process.
THREAD_ENV = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
SEED = 35
RANDOM_STATE = 0


def batched(workload: str) -> bool:
    return workload != 'ocr'


# --- W1: OCR ------------------------------------------------------------------------

# Words in capitals and digits that the bundled recogniser reads back exactly in
# Pillow's bundled font (no 0/O or 1/I pairs, which no OCR tells apart in this font).
WORDS = (
    'INVOICE TOTAL AMOUNT DUE PAID CASH CARD BANK TRANSFER DATE NAME ADDRESS CITY STREET PHONE '
    'ORDER ITEM PRICE UNIT TAX NET GROSS REF CODE ACCOUNT BRANCH CLERK WEEK MARCH JUNE MAY'
).split()


def ocr_lines(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(rng.randint(1, 3)):
        words = rng.sample(WORDS, rng.randint(1, 3))
        words.insert(rng.randint(0, len(words)), str(rng.randint(2, 9899)).replace('0', '7').replace('1', '8'))
        lines.append(' '.join(words))
    return lines


def draw_png(lines: list[str]) -> bytes:
    """A white PNG with ``lines`` drawn in black, 28 px, Pillow's bundled font."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)
    width = max(int(font.getlength(line)) for line in lines) + 40
    image = Image.new('RGB', (width, 20 + 45 * len(lines)), 'white')
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((20, 10 + 45 * i), line, fill='black', font=font)
    out = io.BytesIO()
    image.save(out, format='PNG')
    return out.getvalue()


def ocr_samples(n: int, seed: int = SEED) -> list[tuple[bytes, str]]:
    """``n`` (PNG bytes, expected text) pairs, the same for a seed; the text's lines joined by ``\\n``."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        lines = ocr_lines(rng)
        samples.append((draw_png(lines), '\n'.join(lines)))
    return samples


def _normal(text: str) -> str:
    return ''.join(text.split()).upper()


def ocr_text_ok(answer: str | bytes, expected: str) -> bool:
    """Whether the answer is the expected text, line by line (case and spaces ignored)."""
    if isinstance(answer, bytes):
        answer = answer.decode('utf-8', 'replace')
    got, want = answer.strip().split('\n'), expected.split('\n')
    return len(got) == len(want) and all(_normal(a) == _normal(b) for a, b in zip(got, want, strict=True))


def ocr_engine() -> Any:
    """A RapidOCR engine on ONNX Runtime with one thread, its bundled models, no angle classifier.

    Detection keeps small images at their size (``limit_type: max``): the
    default scales the shorter side up to 736 px, 7x the work for these images.
    """
    from rapidocr import RapidOCR

    return RapidOCR(
        params={
            'Global.log_level': 'warning',
            'Global.use_cls': False,
            'EngineConfig.onnxruntime.intra_op_num_threads': 1,
            'EngineConfig.onnxruntime.inter_op_num_threads': 1,
            'Det.limit_type': 'max',
            'Det.limit_side_len': 960,
        }
    )


class NotAnImage(ValueError):
    """The request body is not an image Pillow can read."""


class OcrDetect:
    """Stage 1: the PNG bytes in, the text lines' crops (uint8 arrays, top to bottom) out."""

    def __init__(self) -> None:
        self.engine = ocr_engine()
        self(draw_png(['WARM UP']))  # the ONNX session loads on first use

    def __call__(self, png: bytes) -> list[Any]:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            image = np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise NotAnImage(f'the body is not an image: {e}') from None
        found = self.engine(image, use_det=True, use_cls=False, use_rec=False)
        if found.boxes is None:
            return []
        crops = []
        for box in sorted(found.boxes, key=lambda b: float(b[:, 1].min())):
            x0, y0 = np.floor(box.min(axis=0)).astype(int)
            x1, y1 = np.ceil(box.max(axis=0)).astype(int)
            crops.append(np.ascontiguousarray(image[max(y0, 0) : y1, max(x0, 0) : x1]))
        return crops


class OcrRecognise:
    """Stage 2: the crops in, the text out (one line per crop, joined by ``\\n``)."""

    def __init__(self) -> None:
        self.engine = ocr_engine()

    def __call__(self, crops: list[Any]) -> str:
        lines = []
        for crop in crops:
            found = self.engine(crop, use_det=False, use_cls=False, use_rec=True)
            lines.append(found.txts[0] if found.txts else '')
        return '\n'.join(lines)


class Ocr:
    """Both stages in one object, for peers that run the pipeline in one worker."""

    def __init__(self) -> None:
        self.detect = OcrDetect()
        self.recognise = OcrRecognise()
        self.recognise(self.detect(draw_png(['WARM UP'])))

    def __call__(self, png: bytes) -> str:
        return self.recognise(self.detect(png))


# --- W2 and W2b: tabular scoring ----------------------------------------------------


def digits_data() -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype('float32'), data.target


def train_digits() -> Any:
    """The HistGradientBoostingClassifier every peer serves, trained on load_digits (seconds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = digits_data()
    return HistGradientBoostingClassifier(max_iter=50, random_state=RANDOM_STATE).fit(x, y)


def onnx_session(model: Any) -> Any:
    """``model`` converted with skl2onnx, in an ONNX Runtime session with one intra- and one inter-op thread."""
    import onnxruntime as ort
    from skl2onnx import to_onnx

    x, _ = digits_data()
    proto = to_onnx(model, x[:1], target_opset=17, options={id(model): {'zipmap': False}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=['CPUExecutionProvider'])


def digits_bodies(n: int, seed: int = SEED) -> list[bytes]:
    """``n`` request bodies: rows of load_digits (with replacement, fixed seed) as ``{"row": [...]}``."""
    x, _ = digits_data()
    rng = random.Random(seed)
    return [json.dumps({'row': [float(v) for v in x[rng.randrange(len(x))]]}).encode() for _ in range(n)]


class BadRequest(ValueError):
    """The request body is not the JSON ``{"row": [64 numbers]}``."""


def parse_row(body: bytes | str | dict) -> tuple[list[float], float]:
    """(row, seconds to sleep first) from one request body."""
    try:
        value = body if isinstance(body, dict) else json.loads(body)
        row = [float(v) for v in value['row']]
        sleep = float(value.get('sleep', 0))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise BadRequest(f'the body is not {{"row": [64 numbers]}}: {type(e).__name__}: {e}') from None
    if len(row) != 64:
        raise BadRequest(f'"row" has {len(row)} numbers, not 64')
    return row, sleep


class Digits:
    """Scores a batch of bodies; ``onnx=True`` runs the converted model in ONNX Runtime (W2b)."""

    def __init__(self, onnx: bool = False) -> None:
        self.model = train_digits()
        self.session = onnx_session(self.model) if onnx else None
        self.score([digits_bodies(1)[0]])

    def labels(self, rows: list[list[float]]) -> list[int]:
        import numpy as np

        x = np.asarray(rows, dtype=np.float32)
        if self.session is not None:
            return [int(v) for v in self.session.run(None, {self.session.get_inputs()[0].name: x})[0]]
        return [int(v) for v in self.model.predict(x)]

    def labels_of(self, items: list[tuple[list[float], float]]) -> list[int]:
        """Labels of parsed rows ``(row, sleep)`` (what :func:`parse_row` gives).
        A batch first waits for its longest ``sleep``: the failure round's
        stuck request holds up the batch it joined, in every server alike."""
        sleep = max((s for _, s in items), default=0.0)
        if sleep:
            time.sleep(sleep)
        return self.labels([r for r, _ in items]) if items else []

    def score(self, bodies: list[Any]) -> list[dict | Exception]:
        """One answer per body, ``{"label": int}``, or the :class:`BadRequest` for a bad body."""
        parsed: list[tuple[list[float], float] | Exception] = []
        for body in bodies:
            try:
                parsed.append(parse_row(body))
            except BadRequest as e:
                parsed.append(e)
        labels = iter(self.labels_of([p for p in parsed if not isinstance(p, Exception)]))
        return [p if isinstance(p, Exception) else {'label': next(labels)} for p in parsed]

    def one(self, body: Any) -> dict:
        """One body (peers that do not batch it themselves); raises :class:`BadRequest`."""
        (answer,) = self.score([body])
        if isinstance(answer, Exception):
            raise answer
        return answer


def digits_expected(bodies: list[bytes], onnx: bool = False) -> list[int]:
    """The labels the served model gives ``bodies`` (the model is deterministic: same data, same random_state)."""
    return Digits(onnx=onnx).labels([parse_row(b)[0] for b in bodies])


def make(workload: str) -> Any:
    """The whole model of a workload in one object: ``Ocr()`` or ``Digits(onnx=...)``."""
    if workload == 'ocr':
        return Ocr()
    return Digits(onnx=workload == 'digits-onnx')
