"""Turn a user's photo or array into the 28x28 light-on-dark input Fashion-MNIST's images are."""

from __future__ import annotations

import io
import logging
import re
import struct
import tokenize
import warnings
from typing import Callable

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from fmnist.errors import FmnistError
from fmnist.facts import IMAGE_SIDE, NUM_FEATURES

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # as Pillow names them
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")  # a phone's JPEG (MPO) holds a preview beside its picture: not frames
FORMATS_SAID = ", ".join({"WEBP": "WebP"}.get(name, name) for name in FORMATS)  # as people write them
# Images Pillow reads, or a plugin would, that fmnist refuses by name: TIFF through libtiff, which prints its errors on
# a damaged file straight to stderr, past any one-line error; HEIC and AVIF need a plugin, ICO holds icons, not photos.
FOREIGN_SIGNATURES = {b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x00\x00\x01\x00": "ICO", b"%PDF": "PDF"}
# An ISO media file's major brand, at byte 8: HEIC (an iPhone's photos), HEIF, AVIF, still or a sequence.
FOREIGN_BRANDS = {**dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"), "HEIC"),
                  **dict.fromkeys((b"mif1", b"msf1"), "HEIF"), **dict.fromkeys((b"avif", b"avis"), "AVIF")}
# Fashion-MNIST's converter trimmed edges within 5% of the maximum intensity of the corner colour; a photo's noise
# can ask for more: NOISE_SIGMAS times its spread, measured on the edge, up to MAX_TOLERANCE (past which the spread
# is the garment's own detail on a tiny image, not noise).
BORDER_TOLERANCE = 0.05 * 255
NOISE_SIGMAS = 5
MAX_TOLERANCE = 0.2 * 255
MAX_STRETCH = 4
ROUNDED_CORNERS = 0.05  # the most of a picture that transparent corners are taken to round off
DETECT_SIDE = 8 * IMAGE_SIDE  # the garment is looked for on a copy at most about this size
# JPEGs decode at a reduced scale (DCT scaling) no smaller than this: plenty for a 28-pixel result.
JPEG_DRAFT_SIDE = 8 * IMAGE_SIDE
ARRAY_SHAPES = ((IMAGE_SIDE, IMAGE_SIDE), (NUM_FEATURES,))
MAX_ITEM_BYTES = 16  # complex128, the widest number NumPy has; a wider "void" item is a claim of gigabytes
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}
BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)  # the DIB headers there are: "BM" alone starts many a text file
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# EXIF orientation -> the turn that makes the picture upright, as ImageOps.exif_transpose has it.
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}

log = logging.getLogger(__name__)


def quiet_pillow_warnings() -> None:
    """Silence, for the whole process, Pillow's warnings that only make noise for fmnist's commands (even under -q).
    Called by predict's and serve's commands, never on import: a program of one's own keeps Pillow's warnings."""
    # Pillow warns on stderr about a damaged EXIF block it then skips (camera files often carry one), and about a
    # broken animation (APNG) or multi-picture (MPO) header, after which it reads the first picture: the photo is
    # classified all the same. Process-wide: catch_warnings around each decoding would not be thread-safe (serve
    # decodes in threads).
    warnings.filterwarnings("ignore", category=UserWarning,
                            module=r"PIL\.(TiffImagePlugin|PngImagePlugin|JpegImagePlugin)")
    # Pillow warns of an image between its pixel limit and twice that (it refuses one over twice it on opening);
    # decode_image applies the limit itself, to the size decoded: a baseline JPEG's at its reduced scale, so that a
    # 108-megapixel phone photo is read (one over twice the limit, about 179 megapixels, is refused on opening).
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadInput(FmnistError):
    """An input that cannot be classified; ``status`` is the HTTP status that answers it."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode PNG, JPEG, WebP, BMP or GIF (an animated one's first frame) to upright 8-bit grayscale, EXIF applied."""
    if not data:
        raise BadInput(f"{name} is empty (0 bytes): give the image file's contents")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            # A JPEG, or a phone's MPO (a JPEG and its extras), decodes at a reduced scale, and is judged at it; not
            # a progressive one, for which libjpeg keeps every coefficient of the full size (2 bytes a pixel).
            width, height = image.size
            if isinstance(image, JpegImagePlugin.JpegImageFile):
                image.draft("L", (JPEG_DRAFT_SIDE, JPEG_DRAFT_SIDE))
                if not image.info.get("progressive"):
                    width, height = image.size
            if width * height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"Image size ({width * height} pixels)")
            # Decoded here, where its damage is refused: reading the EXIF of a PNG decodes it first, and _upright
            # skips a failure there as a damaged EXIF block, after which the rows decoded so far would be classified.
            animated = image.format in ANIMATED_FORMATS and _animated(image)  # before the first frame is decoded
            image.load()
            if animated:
                log.warning("%s is animated: classified by its first frame", name)
            upright = _upright(image)
            if upright.mode.startswith("I;16") or upright.mode == "I":
                # 16-bit grayscale: convert("L") would clip every value above 255 instead of scaling it down.
                # In integers: floats took 8 bytes a pixel, a gigabyte for a small file of 6,000 x 6,000.
                wide = np.clip(np.asarray(upright), 0, 65535).astype(np.uint32)
                transparent = upright.info.get("transparency")
                upright = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # round(wide / 257)
                if isinstance(transparent, int):
                    upright.info["transparency"] = min(255, round(transparent / 257))
            if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
                upright = _on_backdrop(upright.convert("RGBA"))
            return np.asarray(upright.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        # Pillow's own, raised from twice its limit, says "Image size (N pixels) exceeds limit of 2x pixels".
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels[1]):,} pixels" if pixels else "over twice the limit"
        raise BadInput(f"{name} is too large when decoded ({size}); the limit is {MAX_PIXELS:,} pixels: scale it "
                       "down (the model sees 28x28)", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's, for damage
        # Pillow cannot tell a damaged header from a foreign format, nor a BMP from text that starts "BM": the
        # signature can.
        claimed = claimed_format(data)
        if claimed is None:
            foreign = foreign_format(data)
            if foreign:
                raise BadInput(f"{name} is in {foreign} format, which fmnist does not read: convert it to one of "
                               f"{FORMATS_SAID}", 415) from None
            raise BadInput(f"{name} is not a supported image: use {FORMATS_SAID} or a .npy array", 415) from None
        if isinstance(exc, UnidentifiedImageError):
            raise BadInput(f"{name} starts like a {claimed} but is truncated or damaged: give the whole file, or "
                           "save it again") from None
        raise BadInput(f"{name} is truncated or damaged ({exc}): give the whole file, or save it again") from None


def _animated(image: Image.Image) -> bool:
    """Whether the first frame has others after it (one frame ahead is looked at, not them all); where the look
    fails on damage past the first frame, that frame is classified all the same, and the image taken as animated."""
    try:
        return bool(getattr(image, "is_animated", False))
    except (OSError, EOFError, ValueError, IndexError, struct.error):  # Pillow's, for a frame damaged past the first
        return True


def claimed_format(data: bytes) -> str | None:
    """The format that ``data``'s first bytes claim, of those read here (a WAV file is RIFF too, but not RIFF WEBP)."""
    # Only where the file is long enough to tell: a shorter one is one cut short.
    if data.startswith(b"RIFF") and len(data) >= 12 and data[8:12] != b"WEBP":
        return None
    if data.startswith(b"BM") and len(data) >= 18 and int.from_bytes(data[14:18], "little") not in BMP_HEADER_SIZES:
        return None
    if data.startswith(b"BM") and 10 <= len(data) < 18 and data[6:10] != bytes(4):  # too short to hold the DIB
        return None  # header's size, but its reserved bytes, 0 as BMP writers leave them, are text's ("BM is a text")
    return next((fmt for magic, fmt in SIGNATURES.items() if data.startswith(magic)), None)


def foreign_format(data: bytes) -> str | None:
    """The format of an image file that fmnist refuses, where its first bytes tell: named, so the user knows what to
    convert."""
    if data[4:8] == b"ftyp" and data[8:12] in FOREIGN_BRANDS:
        return FOREIGN_BRANDS[data[8:12]]
    return next((fmt for magic, fmt in FOREIGN_SIGNATURES.items() if data.startswith(magic)), None)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as it is when its EXIF cannot be read."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a camera's damaged EXIF block (Pillow raises several kinds) is no reason to refuse the photo
        orientation = None
    # Not ImageOps.exif_transpose, which writes the EXIF again and fails on a tag of the wrong type.
    return image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image


def _on_backdrop(rgba: Image.Image) -> Image.Image:
    """Transparent pixels filled in: a few, in the corners (a card's rounded corners), take the grey of the opaque edge;
    else (a garment cut out) they are white behind a dark garment, black behind a light one."""
    # White, as product photos sit on white; black behind a light garment, which on white would vanish.
    grey, opaque = np.asarray(rgba.convert("L")), np.asarray(rgba.getchannel("A")) > 127
    edge_opaque = _ring(opaque)
    if not opaque[CORNERS].any() and opaque.mean() >= 1 - ROUNDED_CORNERS and edge_opaque.any():
        shade = int(np.median(_ring(grey)[edge_opaque]))
    else:
        shade = 0 if opaque.any() and np.median(grey[opaque]) > 127 else 255
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (shade, shade, shade, 255)), rgba)


_Backdrop = Callable[[np.ndarray, np.ndarray], np.ndarray]  # its grey at positions from 0 to 1 across the image
MAD_TO_SIGMA = 1.4826  # a normal spread's standard deviation from its median absolute deviation
CORNERS = ([0, 0, -1, -1], [0, -1, 0, -1])  # an image's four corner pixels, as an index
REFITS = 5  # rounds of fitting the backdrop and setting aside the edge pixels it does not explain


def _centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions (u across, v down, from 0 to 1) of the centres of an image's pixels."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return (u + 0.5) / width, (v + 0.5) / height


def _ring(values: np.ndarray) -> np.ndarray:
    """An image's edge pixels in order round it, so that neighbours in the result are neighbours in the image (in an
    image under 3 pixels a side, all of them row by row)."""
    if min(values.shape) < 3:
        return values.ravel()
    return np.concatenate([values[0, :-1], values[:-1, -1], values[-1, :0:-1], values[:0:-1, 0]])


def _backdrop_terms(height: int, width: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The terms of the backdrop's surface at given positions, for an image of this many pixels."""
    # A plane (light falling from one side) and a bowl about the centre (a lens' vignette, round on an image of any
    # shape): few enough terms that the surface fitted to the edge cannot bend to meet a garment inside. An axis of
    # one or two pixels has no room for a slope or a bowl along it: they would be made up.
    across, down = width >= 3, height >= 3

    def terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        columns = [np.ones_like(u)] + [u, (u - 0.5) ** 2] * across + [v, (v - 0.5) ** 2] * down
        return np.stack(columns, axis=-1)

    return terms


def _backdrop(small: np.ndarray) -> tuple[_Backdrop, float]:
    """The backdrop as a smooth surface fitted to the edge pixels the garment leaves free, and how far from it a
    pixel must be to count as garment."""
    terms_at = _backdrop_terms(*small.shape)
    u, v = _centres(*small.shape)
    edge, terms = _ring(small), terms_at(_ring(u), _ring(v))
    # Noise from neighbours' differences, which smooth light and a garment's even parts leave out.
    steps = np.abs(np.diff(edge))
    noise = MAD_TO_SIGMA * float(np.median(steps)) / np.sqrt(2) if steps.size else 0.0
    tolerance = min(max(BORDER_TOLERANCE, NOISE_SIGMAS * noise), MAX_TOLERANCE)
    corners = small[CORNERS]
    # The fit starts from the corners' grey where they agree, as Fashion-MNIST took it (a garment may fill most of
    # the edge), else from the edge's most common grey (light falling from one side).
    start = np.median(corners) if np.ptp(corners) <= tolerance else np.median(edge)
    free = np.abs(edge - start) <= tolerance
    for _ in range(REFITS):
        if free.sum() < terms.shape[1]:
            break
        coefficients = np.linalg.lstsq(terms[free], edge[free], rcond=None)[0]
        fits = np.abs(edge - terms @ coefficients) <= tolerance
        if (fits == free).all():
            break
        free = fits
    if free.mean() < 0.5 or free.sum() < terms.shape[1]:  # the garment fills most of the edge (or the edge is too
        # short to fit a surface to): the corners are the backdrop, as Fashion-MNIST took it
        return _as_fashion_mnist(small)
    if np.ptp(terms @ coefficients) <= tolerance / 2:  # even light: one grey
        return _even(float(np.median(edge[free]))), tolerance
    return (lambda u, v: np.clip(terms_at(u, v) @ coefficients.astype(np.float32), 0, 255)), tolerance


def _even(grey: float) -> _Backdrop:
    """A backdrop of one grey."""
    return lambda u, v: np.full(np.shape(u), grey, dtype=np.float32)


def _as_fashion_mnist(image: np.ndarray) -> tuple[_Backdrop, float]:
    """Fashion-MNIST's backdrop: the corners' grey, and its tolerance."""
    return _even(float(np.median(image[CORNERS]))), BORDER_TOLERANCE


def prepare(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """The Fashion-MNIST recipe: trim the backdrop, fit the longest side to 28, centre, light on dark, [0, 1]. An
    image already 28x28 keeps its layout, so a dataset image saved as a PNG comes back as it was."""
    height, width = gray.shape
    # The garment is found on a smaller copy, each pixel the mean of a block, so that a photo's noise evens out; a
    # side under DETECT_SIDE keeps its every pixel (a strip 12 pixels tall is not averaged into one row).
    block_rows, block_cols = -(-height // DETECT_SIDE), -(-width // DETECT_SIDE)
    small = np.asarray(Image.fromarray(gray).convert("F").reduce((block_cols, block_rows)), dtype=np.float32)
    dataset_sized = gray.shape == (IMAGE_SIDE, IMAGE_SIDE)
    # A 28x28 image is no photo: no light to even out, and a dataset image's black is 0
    backdrop, tolerance = _as_fashion_mnist(small) if dataset_sized else _backdrop(small)
    behind_small = backdrop(*_centres(*small.shape))
    difference = small - behind_small
    content = np.abs(difference) > tolerance
    if not content.any():
        if np.ptp(gray) == 0:
            raise BadInput(f"{name} is blank: one uniform colour, nothing to classify; give a picture of a garment")
        raise BadInput(f"{name} shows nothing to classify: no part of it stands out from its backdrop by more than "
                       f"{tolerance:.0f} of 255 grey levels (blank, or a garment too near the backdrop's shade: "
                       "photograph it against a contrasting one)")
    # Fashion-MNIST is light on dark: a garment darker than its backdrop is turned over, one lighter is not.
    lighter = float(np.median(difference[content])) > 0
    if dataset_sized:
        top, bottom, left, right = 0, IMAGE_SIDE, 0, IMAGE_SIDE
    else:
        rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
        top, bottom = rows[0] * block_rows, min(height, (rows[-1] + 1) * block_rows)
        left, right = cols[0] * block_cols, min(width, (cols[-1] + 1) * block_cols)
    crop_height, crop_width = bottom - top, right - left
    scale = IMAGE_SIDE / max(crop_height, crop_width)
    size = (max(1, round(crop_width * scale)), max(1, round(crop_height * scale)))
    # In floats: Lanczos rings at a garment's edges, and 8-bit pixels would clip the ring past black or white only.
    fitted = np.asarray(Image.fromarray(gray[top:bottom, left:right]).convert("F").resize(
        size, Image.Resampling.LANCZOS), dtype=np.float32)
    u, v = _centres(size[1], size[0])  # within the crop, then within the whole image, where the backdrop was fitted
    behind = backdrop((left + u * crop_width) / width, (top + v * crop_height) / height)
    # The backdrop becomes 0, as in Fashion-MNIST, and the far end of the scale from it 1, whatever its grey.
    lifted = (fitted - behind) / np.maximum(255 - behind, 1) if lighter else (behind - fitted) / np.maximum(behind, 1)
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    # An odd margin's extra pixel goes above and to the left, as in Fashion-MNIST (30,547 of its 31,288 odd margins).
    row, col = (IMAGE_SIDE - size[1] + 1) // 2, (IMAGE_SIDE - size[0] + 1) // 2
    canvas[row: row + size[1], col: col + size[0]] = lifted
    if not dataset_sized:
        # Every Fashion-MNIST image reaches 254 or 255 at its brightest: a photo's garment, however faint against its
        # backdrop (a grey shirt on white) or thin (a sandal's straps), is stretched to reach 1 too, at most
        # MAX_STRETCH times (a faint smudge stays faint). Its brightest is the lower of the garment's own contrast
        # and the 28-pixel result's brightest but a few pixels: the first leaves out Lanczos' ring past a garment's
        # edge, the second the blur of what is thinner than a pixel once fitted.
        contrast = difference / (np.maximum(255 - behind_small, 1) if lighter else -np.maximum(behind_small, 1))
        garment_peak = float(np.percentile(contrast[content], 99.5))
        fitted_peak = float(np.percentile(np.clip(lifted, 0, 1), 99.5))
        canvas /= max(min(garment_peak, fitted_peak), 1 / MAX_STRETCH)
    # In 256 levels, as Fashion-MNIST's 8-bit pixels are (the backdrop exactly 0, not a Lanczos ring's 1e-5).
    prepared = (np.round(np.clip(canvas, 0.0, 1.0).astype(np.float64) * 255) / 255).astype(np.float32)
    if np.ptp(prepared) == 0:  # a speck, fitted to 28x28, fills it evenly: the model would see one white square
        raise BadInput(f"{name} shows nothing to classify once prepared: what stands out from its backdrop, "
                       f"{crop_width}x{crop_height} pixels, fills the 28x28 input evenly; give a larger picture of the "
                       "garment")
    return prepared


def _one_image(shape: tuple[int, ...]) -> bool:
    """28x28 or 784 values, with any axes of length 1 (a batch of one, a channel): (1, 784), (28, 28, 1), ..."""
    return tuple(side for side in shape if side != 1) in ARRAY_SHAPES


def _stack(shape: tuple[int, ...]) -> bool:
    """Images along the first axis, one or more: (n, 28, 28), (n, 784), (n, 28, 28, 1), ...; (1, 28, 28) is a stack
    of one, as ``x[i:i + 1]`` saves it, so a script gets an index whatever its stack's length."""
    return len(shape) > 1 and shape[0] >= 1 and _one_image(shape[1:])


def _not_one_image(name: str, shape: tuple[int, ...]) -> BadInput:
    """The answer to an array of another shape than one image's; a stack of images is told so."""
    # (3, 28, 28) too, as 'fmnist predict' reads it: a picture's colours come last, (28, 28, 3), as Pillow gives them.
    if _stack(shape):
        return BadInput(f"{name} has shape {shape}, {shape[0]} images; give one image per file or input, 28x28 or 784 "
                        "values (a stack of them goes whole to 'fmnist predict', to fmnist.predict.Classifier in "
                        "Python, or to an exported model)")
    if shape in ((28, 28, 3), (28, 28, 4)):
        return BadInput(f"{name} has shape {shape}, a colour image's planes; give 28x28 or 784 grey values, or send "
                        "the picture as an image file (PNG, JPEG), which is made grey as the model needs")
    if 0 in shape:  # (0, 784): each row would be an image, but there is none
        return BadInput(f"{name} has shape {shape}: it holds no values; give 28x28 or 784 values")
    return BadInput(f"{name} has shape {shape}; give 28x28 or 784 values")


# What an array of each kind of values that is neither integers nor floats holds, in words: not NumPy's codes.
NOT_NUMBERS = {"U": "text", "S": "bytes", "O": "pickled Python objects", "b": "true/false values",
               "c": "complex numbers", "M": "dates", "m": "time spans", "V": "raw records"}


def _check_numbers(dtype: np.dtype, name: str) -> None:
    """Refuse values that are not numbers before their shape, which says less (text read as one item, say)."""
    if dtype.kind not in "iuf":
        held = NOT_NUMBERS.get(dtype.kind, f"{dtype} values")
        raise BadInput(f"{name} holds {held}; give floats in [0, 1] or integers 0-255")


def check_array(values: np.ndarray, name: str, stack: bool = False) -> np.ndarray:
    """Validate a model-ready array: 28x28 or 784 values, floats in [0, 1] or integer pixels 0-255 (not a 0/1 mask),
    as a 28x28 array; with ``stack``, images along its first axis too, as an n x 28 x 28 array."""
    _check_numbers(values.dtype, name)
    stacked = stack and _stack(values.shape)
    if not (stacked or _one_image(values.shape)):
        raise _not_one_image(name, values.shape)
    if values.dtype.kind in "iu":
        if values.min() < 0 or values.max() > 255:
            raise BadInput(f"{name} holds integers outside 0-255 (integers are read as pixels); give integers 0-255 or "
                           "floats in [0, 1]")
        if values.max() == 1:  # values in [0, 1] that lost their decimal point (JavaScript writes 1.0 as 1)
            raise BadInput(f"{name} holds integers no higher than 1, which as pixels 0-255 make a black image: "
                           "multiply them by 255 to send pixels, or send floats in [0, 1]")
        values = values.astype(np.float32) / 255.0
    else:
        if not np.isfinite(values).all():
            raise BadInput(f"{name} holds NaN or infinite values; give floats in [0, 1] or integers 0-255")
        if values.min() < 0.0 or values.max() > 1.0:
            raise BadInput(f"{name} holds floats outside [0, 1] (scale pixels by 1/255, or send integers 0-255)")
    return values.astype(np.float32).reshape((-1,) * stacked + (IMAGE_SIDE, IMAGE_SIDE))


def load_npy(data: bytes, name: str, stack: bool = False) -> np.ndarray:
    """Read a .npy array (never pickles) and validate it with ``check_array``."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        # The header is checked before loading: a tiny file may claim an array of any size.
        _check_numbers(dtype, name)
        if not (_one_image(shape) or stack and _stack(shape)):
            raise _not_one_image(name, shape)
        if dtype.itemsize > MAX_ITEM_BYTES:
            raise BadInput(f"{name} holds {dtype} values; give floats in [0, 1] or integers 0-255")
        values = np.load(io.BytesIO(data), allow_pickle=False)
    # A cut header; RecursionError: numpy's header parser (ast) on thousands of nested signs in a 10 kB header.
    except (ValueError, OSError, EOFError, MemoryError, SyntaxError, RecursionError, tokenize.TokenError) as exc:
        raise BadInput(f"{name} is not a readable .npy array without pickled objects ({exc}): save it with numpy.save, "
                       "as numbers") from None
    return check_array(values, name, stack)


def load_input(data: bytes, name: str, stack: bool = False) -> np.ndarray:
    """A file's bytes to the model's 28x28 input: ``.npy`` arrays as they are, images through ``prepare``; with
    ``stack``, a ``.npy`` of several images gives them all, n x 28 x 28."""
    if data[:6] == b"\x93NUMPY":
        return load_npy(data, name, stack)
    return prepare(decode_image(data, name), name)
