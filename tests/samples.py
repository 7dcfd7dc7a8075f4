"""Files the tests make: photo-like versions of dataset images, and a corpus of bad inputs with the status each
earns."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def jpeg_with_damaged_exif(image: np.ndarray) -> bytes:
    """A JPEG whose EXIF says "turn a quarter" but also holds a tag claiming more bytes than the file has."""
    entries = [(0x0112, 3, 1, 6 << 16), (0x010E, 2, 1000, 26)]  # orientation 6; a 1,000-byte description
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries) + struct.pack(">I", 0)
    return encode(image, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd)


def photo_like(image: np.ndarray, seed: int) -> tuple[bytes, str]:
    """A 28x28 dataset image as a photo: enlarged, off-centre on a wider backdrop, JPEG. By ``seed % 5`` the backdrop
    is white, white with camera noise, lit unevenly (darker towards the corners), a grey table under a garment
    lighter than it, or white under a grey garment; every third photo is stored turned a quarter with the EXIF
    orientation that turns it back."""
    rng = np.random.default_rng(seed)
    side = 28 * int(rng.integers(4, 12))
    height, width = side + int(rng.integers(10, 200)), side + int(rng.integers(10, 200))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    cover = np.zeros((height, width))  # how much garment each pixel shows
    cover[top: top + side, left: left + side] = np.asarray(
        Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    rows, cols = np.mgrid[0:height, 0:width]
    kind = seed % 5
    backdrop = {
        0: np.full((height, width), 255.0),
        1: np.full((height, width), 245.0) + rng.normal(0, 6, (height, width)),
        2: 250 - 40 * ((rows - height / 2) ** 2 + (cols - width / 2) ** 2) / ((height / 2) ** 2 + (width / 2) ** 2),
        3: np.full((height, width), 150.0),
        4: np.full((height, width), 245.0),
    }[kind]
    # A black garment on the light backdrops, a white one on the grey table, a grey one (contrast 0.35) on white.
    paint = {3: 255.0, 4: 160.0}.get(kind, 0.0)
    pixels = np.clip(backdrop * (1 - cover) + paint * cover, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(pixels).convert("RGB")
    if seed % 3 == 0:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # "turn 90 degrees clockwise to view": undoes the anticlockwise turn below
        return encode(canvas.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=85, exif=exif), f"photo{seed}.jpg"
    return encode(canvas, "JPEG", quality=85), f"photo{seed}.jpg"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb as it arrives."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def png_with_damaged_data(png: bytes) -> bytes:
    """``png`` with the second half of its compressed pixels zeroed, its length kept: a download cut short into a
    file made at full size (Pillow does not check the compressed data's CRC, so only decoding finds the damage)."""
    start = png.index(b"IDAT") + 4
    end = start + struct.unpack(">I", png[start - 8:start - 4])[0]
    middle = (start + end) // 2
    return png[:middle] + bytes(end - middle) + png[end:]


def npy_header(header: bytes) -> bytes:
    """A .npy file (format 1.0) of the header ``header`` as it is, and no data."""
    return b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little") + header + b"\n"


def npy_claiming(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A tiny .npy file whose header claims an array of ``shape`` and ``descr``: gigabytes if it were believed."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(16)


def garment(dark_on_light: bool = True) -> np.ndarray:
    """A small synthetic picture: an off-centre shape on a plain background."""
    canvas = np.full((90, 120), 250 if dark_on_light else 5, dtype=np.uint8)
    canvas[20:70, 30:55] = 40 if dark_on_light else 215
    canvas[20:35, 55:80] = 90 if dark_on_light else 165
    return canvas


UNSUPPORTED, NOT_NPY = "is not a supported image", "is not a readable .npy array"
FOREIGN = "is in {} format, which fmnist does not read: convert it to one of PNG, JPEG, WebP, BMP, GIF"


def bad_files() -> list[tuple[str, str, bytes, int, str]]:
    """(id, file name, bytes, expected status, the reason's words) for uploads that must be refused."""
    noise = np.random.default_rng(0).integers(0, 256, (60, 40), dtype=np.uint8)
    png, jpeg = encode(noise), encode(noise, "JPEG")
    pixels = np.random.default_rng(1).random((28, 28))
    return [
        ("empty-file", "empty.png", b"", 422, "is empty (0 bytes)"),
        ("text", "notes.txt", b"hello, this is not an image\n" * 20, 415, UNSUPPORTED),
        ("html", "page.png", b"<!doctype html><html><body>hi</body></html>", 415, UNSUPPORTED),
        ("svg", "vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415, UNSUPPORTED),
        ("pdf", "doc.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 415, FOREIGN.format("PDF")),
        # RIFF, not WebP
        ("wav", "song.wav", b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28), 415, UNSUPPORTED),
        ("text-starting-bm", "notes.txt", b"BMW manual, page 1\n" * 10, 415, UNSUPPORTED),  # "BM", not a BMP
        ("short-text-starting-bm", "bm.txt", b"BM is a text", 415, UNSUPPORTED),
        ("bmp-cut-short", "cut.bmp", encode(noise, "BMP")[:14], 422, "starts like a BMP but is truncated"),
        ("tiff", "scan.tiff", encode(noise, "TIFF"), 415, FOREIGN.format("TIFF")),
        ("tiff-big-endian", "scan.tif", b"MM\x00*" + bytes(60), 415, FOREIGN.format("TIFF")),
        ("heic", "IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40), 415,
         FOREIGN.format("HEIC")),
        ("avif", "photo.avif", b"\x00\x00\x00\x1cftypavif" + bytes(40), 415, FOREIGN.format("AVIF")),
        ("heif-sequence", "burst.heics", b"\x00\x00\x00\x1cftypmsf1" + bytes(40), 415, FOREIGN.format("HEIF")),
        ("ico", "icon.ico", encode(Image.fromarray(noise).resize((32, 32)), "ICO"), 415, FOREIGN.format("ICO")),
        ("png-truncated", "cut.png", png[: len(png) // 2], 422, "is truncated or damaged"),
        ("jpeg-truncated", "cut.jpg", jpeg[: len(jpeg) // 2], 422, "is truncated or damaged"),
        ("png-data-damaged", "zeroed.png", png_with_damaged_data(png), 422, "is truncated or damaged"),
        ("png-header-only", "head.png", png[:33], 422, "starts like a PNG but is truncated"),
        ("png-bomb", "bomb.png", png_claiming(100_000, 100_000), 413, "is too large when decoded"),
        ("png-over-pillow-limit", "big.png", png_claiming(10_000, 10_000), 413, "is too large when decoded"),
        ("blank-white", "white.png", encode(np.full((50, 50), 255, np.uint8)), 422, "is blank"),
        ("one-pixel", "dot.png", encode(np.zeros((1, 1), np.uint8)), 422, "is blank"),
        # A garment of grey 100 on a backdrop of 110: not one colour, but too faint to tell apart.
        ("faint-garment", "faint.png", encode(np.pad(np.full((30, 30), 100, np.uint8), 15, constant_values=110)), 422,
         "shows nothing to classify: no part of it stands out from its backdrop by more than 13 of 255 grey levels "
         "(blank, or a garment too near the backdrop's shade"),
        # A speck on white: fitted to 28x28, it would fill the input evenly, one white square.
        ("speck", "speck.png", encode(np.pad(np.zeros((1, 1), np.uint8), 2, constant_values=255)), 422,
         "shows nothing to classify once prepared: what stands out from its backdrop, 1x1 pixels, fills the 28x28 "
         "input evenly; give a larger picture of the garment"),
        ("npy-wrong-shape", "a.npy", npy(np.zeros((10, 10))), 422, "has shape (10, 10)"),
        ("npy-batch", "a.npy", npy(np.zeros((2, 784))), 422, "has shape (2, 784), 2 images; give one image per file "
         "or input, 28x28 or 784 values (a stack of them goes whole to 'fmnist predict', to "
         "fmnist.predict.Classifier in Python, or to an exported model)"),
        ("npy-stack", "a.npy", npy(np.zeros((5, 28, 28, 1))), 422, "has shape (5, 28, 28, 1), 5 images; give one"),
        ("npy-three-images", "a.npy", npy(np.zeros((3, 28, 28))), 422,  # as 'fmnist predict' reads it
         "has shape (3, 28, 28), 3 images; give one image per file"),
        ("npy-three-channels", "a.npy", npy(np.zeros((28, 28, 3))), 422,
         "has shape (28, 28, 3), a colour image's planes; give 28x28 or 784 grey values, or send the picture as an "
         "image file"),
        ("npy-one-value", "a.npy", npy(np.zeros((1, 1))), 422, "has shape (1, 1)"),
        ("npy-empty-stack", "a.npy", npy(np.zeros((0, 784))), 422, "has shape (0, 784): it holds no values"),
        ("npy-float-above-1", "a.npy", npy(pixels * 2), 422, "holds floats outside [0, 1]"),
        ("npy-negative", "a.npy", npy(pixels - 0.5), 422, "holds floats outside [0, 1]"),
        ("npy-nan", "a.npy", npy(np.where(pixels > 0.5, np.nan, pixels)), 422, "holds NaN or infinite"),
        ("npy-inf", "a.npy", npy(np.full(784, np.inf)), 422, "holds NaN or infinite"),
        ("npy-int-300", "a.npy", npy(np.full((28, 28), 300, np.int32)), 422, "holds integers outside 0-255"),
        ("npy-int-negative", "a.npy", npy(np.full((28, 28), -1, np.int16)), 422, "holds integers outside 0-255"),
        # 0/1 read as pixels: black
        ("npy-mask-of-integers", "a.npy", npy((pixels > 0.5).astype(np.uint8)), 422, "holds integers no higher than 1"),
        ("npy-bool", "a.npy", npy(np.ones((28, 28), bool)), 422, "holds true/false values; give floats"),
        ("npy-complex", "a.npy", npy(np.ones(784, complex)), 422, "holds complex numbers; give"),
        ("npy-strings", "a.npy", npy(np.array(["x"] * 784)), 422, "holds text; give floats in [0, 1]"),
        ("npy-pickled-objects", "a.npy", npy(np.array([{"a": 1}] * 784, dtype=object)), 422,
         "holds pickled Python objects; give"),
        ("npy-truncated", "a.npy", npy(pixels)[:100], 422, NOT_NPY),
        ("npy-header-cut", "a.npy", b"\x93NUMPY\x01\x000\x00{'descr':'<f4','fortran_order':False,'shape':(-1", 422,
         NOT_NPY),
        ("npy-claims-huge", "a.npy", npy_claiming((100_000_000_000,)), 422, "has shape (100000000000,)"),
        ("npy-nested-signs", "a.npy", npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': " + b"-" * 4000
                                                 # within the 10 kB NumPy reads, too deep for ast
                                                 + b"1}"), 422, NOT_NPY),
        ("npy-claims-huge-items", "a.npy", npy_claiming((28, 28), "|V2000000000"), 422, "holds raw records; give"),
    ]


def bad_json_bodies() -> list[tuple[str, bytes, int]]:
    """(id, JSON body, expected status) for array requests that must be refused."""
    row = ",".join(["0.5"] * 784)
    return [
        ("not-json", b"{inputs: nope", 400),
        ("not-utf8", b"\xff\xfe\x00{", 400),
        ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, 400),
        ("a-list", b"[1, 2, 3]", 422),
        ("no-inputs", b'{"images": []}', 422),
        ("inputs-empty", b'{"inputs": []}', 422),
        ("inputs-a-string", b'{"inputs": "pixels"}', 422),
        ("shape-27x28", ('{"inputs": [[' + ",".join(["[" + ",".join(["0"] * 28) + "]"] * 27) + "]]}").encode(), 422),
        ("shape-785", ('{"inputs": [[' + row + ",0.5]]}").encode(), 422),
        ("ragged", b'{"inputs": [[[0.1, 0.2], [0.3]]]}', 422),
        ("scalar", b'{"inputs": [0.5]}', 422),
        ("nan", ('{"inputs": [[NaN,' + row[4:] + "]]}").encode(), 422),
        ("infinity", ('{"inputs": [[Infinity,' + row[4:] + "]]}").encode(), 422),
        ("overflow-float", ('{"inputs": [[1e400,' + row[4:] + "]]}").encode(), 422),
        ("float-above-1", ('{"inputs": [[1.5,' + row[4:] + "]]}").encode(), 422),
        ("negative", ('{"inputs": [[-0.1,' + row[4:] + "]]}").encode(), 422),
        ("int-256", ('{"inputs": [[' + ",".join(["256"] * 784) + "]]}").encode(), 422),
        ("huge-int", ('{"inputs": [[' + ",".join([str(10**30)] * 784) + "]]}").encode(), 422),
        ("int-of-5000-digits", ('{"inputs": [[' + "9" * 5000 + "]]}").encode(), 422),
        ("int-beyond-64-bits", ('{"inputs": [[' + ",".join([str(2**64)] * 784) + "]]}").encode(), 422),
        ("strings", ('{"inputs": [[' + ",".join(['"a"'] * 784) + "]]}").encode(), 422),
        ("nulls", ('{"inputs": [[' + ",".join(["null"] * 784) + "]]}").encode(), 422),
        ("booleans", ('{"inputs": [[' + ",".join(["true"] * 784) + "]]}").encode(), 422),
        ("a-boolean-among-numbers", ('{"inputs": [[true,' + row[4:] + "]]}").encode(), 422),
        ("objects", ('{"inputs": [[' + ",".join(["{}"] * 784) + "]]}").encode(), 422),
        ("too-many-inputs", ('{"inputs": [' + ",".join(["[" + row + "]"] * 65) + "]}").encode(), 413),
        ("inputs-twice", ('{"inputs": [[' + row + ']], "inputs": [[' + row + "], [" + row + "]]}").encode(), 422),
        ("an-option-in-the-body", ('{"inputs": [[' + row + ']], "top_k": 1}').encode(), 422),
        ("floats-that-lost-their-point", ('{"inputs": [[' + ",".join(["0", "1"] * 392) + "]]}").encode(), 422),
    ]
