import contextlib
import io
import logging

import numpy as np
import pytest
from PIL import Image

from fmnist.images import BadInput, check_array, decode_image, load_input, prepare
from samples import EXIF_ORIENTATION, bad_files, encode, garment, npy, png_claiming


def test_prepare_trims_fits_centres_and_inverts_a_light_background():
    seen = prepare(garment(dark_on_light=True))
    assert seen.shape == (28, 28) and seen.dtype == np.float32
    rows, cols = np.flatnonzero(seen.max(axis=1) > 0.05), np.flatnonzero(seen.max(axis=0) > 0.05)
    # The shape is 50 tall and 50 wide: it fills the canvas both ways once its border is trimmed.
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (0, 27, 0, 27)
    assert seen[:, :14].mean() > seen[:, 14:].mean()  # the darker half of the photo is the brighter half now
    # The backdrop (250) becomes 0 and the darkest paint (40) 1, as every Fashion-MNIST image reaches 255; the other
    # paint (90) in proportion, (250 - 90) / (250 - 40).
    assert seen[-1, -1] == 0.0 and seen.max() == pytest.approx(1.0, abs=0.01)
    assert np.median(seen[2:8, 20:26]) == pytest.approx(160 / 210, abs=0.03)


def test_a_faint_garment_is_stretched_to_full_contrast_but_a_smudge_only_four_times():
    black, grey, smudge = (np.where(garment() < 128, paint, 245).astype(np.uint8) for paint in (0, 160, 220))
    seen = prepare(black)
    assert np.median(seen[seen > 0.5]) == 1.0  # its inside at full brightness, not only a Lanczos ring at its edge
    np.testing.assert_allclose(prepare(grey), seen, atol=0.02)  # a grey shirt on white, as a black one
    seen = prepare(smudge)
    assert np.median(seen[seen > 0.1]) == pytest.approx(4 * 25 / 245, abs=0.02)  # contrast 0.10, stretched 4 times
    straps = np.full((1000, 1000), 245, np.uint8)
    for row in range(100, 900, 200):
        straps[row: row + 30, 100:900] = 160  # a sandal's thin grey straps: a pixel wide at 28 pixels
    seen = prepare(straps)
    assert seen.max() == 1.0 and np.median(seen[seen > 0.5]) > 0.9  # not the 0.3 of their blur alone


def test_a_wide_shape_is_centred_vertically():
    canvas = np.full((100, 100), 255, np.uint8)
    canvas[70:80, 5:45] = 0  # 10 tall, 40 wide, near a corner
    seen = prepare(canvas)
    rows = np.flatnonzero(seen.max(axis=1) > 0.5)
    assert rows[0] + rows[-1] in (26, 27, 28)  # centred: as far from the top as from the bottom
    assert len(rows) == pytest.approx(7, abs=1) and np.flatnonzero(seen.max(axis=0) > 0.5).size == 28


def test_dark_and_light_backgrounds_give_the_same_input():
    np.testing.assert_allclose(prepare(garment(True)), prepare(garment(False)), atol=0.03)


def test_exif_orientation_is_applied():
    upright = garment()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    turned = encode(Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    expected = prepare(upright)
    np.testing.assert_allclose(load_input(turned, "turned.jpg"), expected, atol=0.08)
    ignored = prepare(np.asarray(Image.open(io.BytesIO(turned)).convert("L")))  # the same file read sideways
    assert np.abs(ignored - expected).mean() > 0.1


def test_a_dataset_image_as_png_comes_back_unchanged():
    image = np.zeros((28, 28), np.uint8)
    image[3:28, 6:22] = np.linspace(60, 255, 16, dtype=np.uint8)  # touches the bottom, like most of the dataset
    image[3:6, 6:22] = 7  # a faint top edge is kept where it is, not trimmed and the garment re-centred
    np.testing.assert_array_equal(load_input(encode(image), "x.png"), (image / 255.0).astype(np.float32))
    dark_on_white = load_input(encode(255 - image), "inverted.png")  # as the report draws them
    np.testing.assert_allclose(dark_on_white, image / 255.0, atol=1e-6)


def test_a_garment_lighter_than_a_grey_backdrop_is_not_turned_over():
    on_grey = np.full((90, 120), 170, np.uint8)
    on_grey[garment() != 250] = 255  # white paint on a grey table: lighter than its backdrop, not darker
    seen = prepare(on_grey)
    assert seen.max() == 1.0 and seen[-1, -1] == 0.0
    np.testing.assert_array_equal(seen > 0.5, prepare(garment()) > 0.5)


def test_a_garment_filling_most_of_the_edge_is_not_taken_for_the_backdrop():
    rows, cols = np.mgrid[0:300, 0:300]
    for radius in (165, 180, 195):  # a dark disc over 46%, 67% and 83% of the edge; the corners stay white
        seen = prepare(np.where((rows - 150) ** 2 + (cols - 150) ** 2 < radius ** 2, 40, 245).astype(np.uint8))
        assert seen[14, 14] > 0.8 and seen[0, 0] == 0.0, radius


@pytest.mark.filterwarnings("error")  # NumPy's warnings about empty slices would reach the user's terminal
@pytest.mark.parametrize("shape", [(1, 7), (2, 2), (3, 3), (12, 3000), (3000, 2)])
def test_tiny_and_thin_images_are_prepared_or_refused_without_warnings(shape):
    prepared = 0
    for pattern in np.random.default_rng(0).choice([10, 240], (200, *shape)).astype(np.uint8):  # any mix of two greys
        with contextlib.suppress(BadInput):
            assert prepare(pattern).shape == (28, 28)
            prepared += 1
    assert prepared > 0  # not every one refused
    image = np.full(shape, 240, np.uint8)
    with pytest.raises(BadInput, match="blank"):
        prepare(image)
    height, width = shape
    image[height // 3: max(height // 3 + 1, 2 * height // 3), width // 3: max(width // 3 + 1, 2 * width // 3)] = 10
    if np.count_nonzero(image == 10) == 1:  # a speck fills the 28x28 input evenly: nothing the model could tell
        with pytest.raises(BadInput, match="shows nothing to classify once prepared: .* 1x1 pixels, fills"):
            prepare(image)
        return
    seen = prepare(image)  # the dark middle alone, turned light on dark, at full contrast (give or take Lanczos)
    assert seen.shape == (28, 28) and seen.dtype == np.float32 and seen.max() == pytest.approx(1.0, abs=0.03)


def photo(clean: np.ndarray, backdrop: np.ndarray, noise: float = 0.0) -> np.ndarray:
    """``clean`` (dark paint on 250) scaled up 4 times and painted on ``backdrop``, with Gaussian noise."""
    big = np.asarray(Image.fromarray(clean).resize((clean.shape[1] * 4, clean.shape[0] * 4)), np.float64)
    paint = 1 - big / 250  # how much paint covers each pixel
    mixed = backdrop * (1 - paint) + 10 * paint + np.random.default_rng(0).normal(0, noise, big.shape)
    return np.clip(mixed, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("light, noise", [("even", 6.0), ("vignette", 2.0), ("gradient", 2.0)])
def test_a_photos_noise_and_uneven_light_leave_the_garment_as_an_even_photo_gives_it(light, noise):
    # Each of these made the garment fill 21 of 28 columns and its answer a confident wrong one, when only an edge
    # all within 13 greys of the corners' was trimmed.
    clean = garment()
    rows, cols = np.mgrid[0:360, 0:480]
    backdrop = {"even": np.full((360, 480), 245.0),
                "vignette": 245 - 20 * ((rows - 180) ** 2 + (cols - 240) ** 2) / (180 ** 2 + 240 ** 2),
                "gradient": np.linspace(235, 185, 360)[:, None] + 0.0 * cols}[light]
    expected = prepare(photo(clean, np.full((360, 480), 245.0)))
    assert np.abs(prepare(photo(clean, backdrop, noise)) - expected).mean() < 0.03


def test_transparent_pixels_are_a_backdrop_the_garment_stands_out_on():
    rgba = np.zeros((90, 120, 4), np.uint8)  # transparent black, and transparent white below, under the backdrop
    shape = garment() < 128
    rgba[shape] = (40, 40, 40, 255)
    on_white = np.where(shape, 40, 255).astype(np.uint8)  # a dark garment: on white, as product photos sit
    np.testing.assert_allclose(load_input(encode(rgba), "cut-out.png"), prepare(on_white), atol=0.01)
    rgba[:] = (255, 255, 255, 0)
    rgba[shape] = (250, 250, 250, 255)  # a white garment: on white it would vanish, so on black
    on_black = np.where(shape, 250, 0).astype(np.uint8)
    np.testing.assert_allclose(load_input(encode(rgba), "white-shirt.png"), prepare(on_black), atol=0.01)


def test_a_cards_transparent_corners_take_its_edge_grey_not_a_contrasting_one():
    card = np.full((90, 120), 250, np.uint8)
    card[garment() < 128] = 40  # a dark garment on a light card
    rgba = np.dstack([card] * 3 + [np.full(card.shape, 255, np.uint8)])
    for corner in (np.s_[:6, :6], np.s_[:6, -6:], np.s_[-6:, :6], np.s_[-6:, -6:]):
        rgba[corner] = (0, 0, 0, 0)  # rounded off, transparent black
    np.testing.assert_allclose(load_input(encode(rgba), "card.png"), prepare(card), atol=0.01)


def test_a_cut_out_cropped_to_its_edges_is_filled_as_a_backdrop_not_with_its_own_grey():
    rgba = np.zeros((200, 120, 4), np.uint8)  # trousers cut out and cropped to their box: most of the edge opaque
    rgba[:40, :] = (30, 30, 30, 255)  # the waistband, the whole width
    rgba[40:, :50] = rgba[40:, 70:] = (30, 30, 30, 255)  # two legs, a transparent gap between them
    on_white = np.where(rgba[..., 3] > 0, 30, 255).astype(np.uint8)
    np.testing.assert_allclose(load_input(encode(rgba), "trousers.png"), prepare(on_white), atol=0.01)


def test_an_odd_margin_leaves_its_extra_row_above_as_fashion_mnist_does():
    canvas = np.zeros((60, 112), np.uint8)
    canvas[10:55, 8:104] = 200  # 45 x 96, a bag say: 13 x 28 once fitted, a margin of 15: 8 rows above, 7 below
    rows = np.flatnonzero(prepare(canvas).max(axis=1) > 0.5)
    assert (rows[0], rows[-1]) == (8, 20)


def test_a_damaged_exif_block_is_read_as_upright_not_refused():
    import struct

    # Orientation 6, and a tag Pillow knows as a number (SMinSampleValue) stored as text, as some cameras write it:
    # Pillow's exif_transpose failed on it with struct.error, a traceback or an HTTP 500.
    entries = [(0x0112, 3, 1, 6 << 16), (0x0154, 2, 4, int.from_bytes(b"sof\x00", "big"))]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries) + struct.pack(">I", 0)
    exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd
    tall = np.full((40, 30), 230, np.uint8)
    tall[5:35, 10:20] = 30
    assert decode_image(encode(tall, "JPEG", exif=exif), "phone.jpg").shape == (30, 40)  # turned, as orientation 6


@pytest.mark.filterwarnings("ignore:Invalid APNG")  # in pytest's process, below; the user's is the subprocess's
def test_a_png_with_a_broken_animation_header_is_read_from_its_first_frame_without_a_warning(tmp_path):
    import struct
    import subprocess
    import sys
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = encode(garment())
    pixels_at = png.index(b"IDAT") - 4
    no_frames = png[:pixels_at] + chunk(b"acTL", struct.pack(">II", 0, 0)) + png[pixels_at:]  # "0 frames"
    np.testing.assert_array_equal(decode_image(no_frames, "odd.png"), garment())
    # In a process of its own, as fmnist's commands (predict, serve) quiet it: pytest has its own warning filters.
    (tmp_path / "odd.png").write_bytes(no_frames)
    for quieted in (True, False):
        decoded = subprocess.run([sys.executable, "-c", "import sys; from fmnist import images; "
                                  f"{'images.quiet_pillow_warnings(); ' if quieted else ''}"
                                  "images.decode_image(open(sys.argv[1], 'rb').read(), 'odd.png')",
                                  tmp_path / "odd.png"], capture_output=True, text=True)
        # Pillow's "Invalid APNG" would reach the command's stderr, under -q too; a program of one's own, which
        # imports fmnist's modules, keeps Pillow's warnings.
        assert decoded.returncode == 0 and (decoded.stderr == "") == quieted, decoded.stderr


def test_a_phones_multi_picture_jpeg_decodes_at_a_reduced_scale_too():
    big = Image.fromarray(garment()).resize((4000, 3000))
    mpo = encode(big, "MPO", save_all=True, append_images=[big.resize((400, 300))])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert decode_image(mpo, "phone.jpg").shape == (375, 500)  # one eighth, as libjpeg's DCT scaling gives
    progressive = encode(big, "JPEG", progressive=True)  # judged at its full size, but decoded small all the same
    assert decode_image(progressive, "progressive.jpg").shape == (375, 500)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, under twice its limit
@pytest.mark.parametrize("size", [(9500, 9500), (12000, 9000)])  # just over Pillow's limit; a 108-megapixel phone's
def test_a_jpeg_over_the_pixel_limit_is_read_at_the_reduced_scale_it_decodes_at(size):
    from fmnist.images import MAX_PIXELS

    assert size[0] * size[1] > MAX_PIXELS
    decoded = decode_image(encode(Image.new("L", size, 240), "JPEG"), "108-megapixels.jpg")
    assert decoded.shape == (-(-size[1] // 8), -(-size[0] // 8))
    # Not a progressive one: libjpeg keeps its every coefficient at full size, whatever the scale it decodes at.
    with pytest.raises(BadInput, match=r"too large when decoded \([\d,]+ pixels\)") as refused:
        decode_image(encode(Image.new("L", size, 240), "JPEG", progressive=True), "progressive.jpg")
    assert refused.value.status == 413


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animated_image_is_read_from_its_first_frame_and_said_so(fmt, caplog):
    first, second = Image.fromarray(garment()), Image.fromarray(255 - garment()[::-1])
    animated = encode(first, fmt, save_all=True, append_images=[second], duration=100, lossless=True)
    with caplog.at_level(logging.WARNING, logger="fmnist.images"):
        np.testing.assert_allclose(load_input(animated, "anim"), load_input(encode(first, fmt, lossless=True), "still"))
    assert [record.getMessage() for record in caplog.records] == ["anim is animated: classified by its first frame"]


def test_an_animated_gif_cut_short_after_its_first_frame_is_classified_or_refused_never_an_unexpected_error():
    rng = np.random.default_rng(0)
    first, second = (Image.fromarray(rng.integers(0, 255, (60, 60), dtype=np.uint8)) for _ in range(2))
    gif = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    still = load_input(encode(first, "GIF"), "still")
    outcomes = set()
    for cut in range(len(gif) // 2, len(gif), 7):  # the second frame damaged anywhere
        try:
            np.testing.assert_allclose(load_input(gif[:cut], "cut.gif"), still)
            outcomes.add("classified by its first frame")
        except BadInput:
            outcomes.add("refused")
    assert "classified by its first frame" in outcomes


def test_a_phones_jpeg_with_its_preview_is_not_called_animated(caplog):
    photo = Image.fromarray(garment()).convert("RGB")
    mpo = encode(photo, "MPO", save_all=True, append_images=[photo.resize((20, 20))])  # a picture and its preview
    with caplog.at_level(logging.WARNING, logger="fmnist.images"):
        load_input(mpo, "photo.jpg")
    assert not caplog.records


def test_every_allowed_format_decodes():
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        assert load_input(encode(garment(), fmt), f"x.{fmt}").shape == (28, 28)


def test_big_jpegs_decode_at_a_reduced_scale():
    big = Image.fromarray(garment()).resize((3600, 2700))
    decoded = decode_image(encode(big, "JPEG"), "big.jpg")
    assert 224 <= min(decoded.shape) and max(decoded.shape) < 1000


@pytest.mark.parametrize("values, expected", [
    (np.full((28, 28), 255, np.uint8), 1.0),
    (np.full(784, 51, np.int64), 0.2),
    (np.full(784, 0.25, np.float32), 0.25),
    (np.full((28, 28), 1.0, np.float64), 1.0),
    (np.full((1, 784), 0.5, np.float32), 0.5),  # a batch of one
    (np.full((28, 28, 1), 102, np.uint8), 0.4),  # one channel, as images are often stored
    (np.full((1, 28, 28, 1), 0.75, np.float32), 0.75),
])
def test_arrays_of_floats_and_pixel_integers_are_read(values, expected):
    checked = check_array(values, "a")
    assert checked.shape == (28, 28) and checked.dtype == np.float32
    np.testing.assert_allclose(checked, expected, rtol=1e-6)
    np.testing.assert_allclose(load_input(npy(values), "a.npy"), checked)


def test_integers_0_and_1_alone_are_refused_not_read_as_a_black_image():
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 10:18] = 1  # a garment's mask, or floats in [0, 1] written without their decimal point
    for refused in (mask, np.ones(784, np.int64)):
        with pytest.raises(BadInput, match=r"^a holds integers no higher than 1, which as pixels 0-255 make a black "
                                           r"image: multiply them by 255 to send pixels, or send floats in \[0, 1\]$"):
            check_array(refused, "a")
    np.testing.assert_allclose(check_array(mask * 255, "a"), mask)  # as pixels, or as floats, it is read
    np.testing.assert_allclose(check_array(mask.astype(np.float32), "a"), mask)
    np.testing.assert_allclose(check_array(mask * 2, "a"), mask * 2 / 255)  # a dark image, but not 0 and 1 alone
    np.testing.assert_array_equal(check_array(np.zeros(784, np.uint8), "a"), 0)  # blank, and answered as such


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped():
    eight = garment()
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)  # 0-255 stretched to 0-65535
    assert sixteen.mode.startswith("I;16")
    np.testing.assert_array_equal(decode_image(encode(sixteen), "wide.png"), eight)
    # A transparent grey (tRNS) stays transparent: the backdrop turns white, as in an 8-bit PNG.
    backdrop = int(eight[0, 0]) * 257
    np.testing.assert_array_equal(decode_image(encode(sixteen, transparency=backdrop), "clear.png"),
                                  np.where(eight == eight[0, 0], 255, eight))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case, name, data, status, reason", bad_files(), ids=[c[0] for c in bad_files()])
def test_bad_files_are_refused_with_a_reason(case, name, data, status, reason):
    with pytest.raises(BadInput) as refused:
        load_input(data, name)
    assert refused.value.status == status and str(refused.value).startswith(f"{name} {reason}"), refused.value


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 100_000])  # over Pillow's limit; over twice it, where Pillow refuses
def test_a_decompression_bomb_is_refused_with_its_size_and_the_limit(side):
    with pytest.raises(BadInput) as refused:
        load_input(png_claiming(side, side), "bomb.png")
    assert str(refused.value) == (f"bomb.png is too large when decoded ({side * side:,} pixels); "
                                  "the limit is 89,478,485 pixels: scale it down (the model sees 28x28)")  # Pillow's


def test_damaged_files_never_raise_anything_but_bad_input():
    """Seeded fuzzing: flipped, cut and inserted bytes in every format either decode or are refused cleanly."""
    rng = np.random.default_rng(7)
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        valid = encode(rng.integers(0, 256, (40, 30), dtype=np.uint8), fmt)
        for i in range(60):
            damaged = bytearray(valid)
            if i % 3 == 0:
                damaged[rng.integers(0, len(damaged))] = rng.integers(0, 256)
            elif i % 3 == 1:
                damaged = damaged[: rng.integers(1, len(damaged))]
            else:
                spot = rng.integers(0, len(damaged))
                damaged[spot:spot] = rng.bytes(int(rng.integers(1, 40)))
            try:
                seen = load_input(bytes(damaged), "fuzz")
            except BadInput as exc:
                assert 400 <= exc.status < 500
            else:
                assert seen.shape == (28, 28) and 0.0 <= seen.min() and seen.max() <= 1.0


@pytest.mark.parametrize("values, said", [(np.asarray(["a"]), "holds text"), (np.asarray([["a"] * 784]), "holds text"),
                                          (np.ones(3, bool), "holds true/false values"),
                                          (np.ones((28, 28), complex), "holds complex numbers")])
def test_values_that_are_not_numbers_are_named_in_words_whatever_their_shape(values, said):
    with pytest.raises(BadInput, match=f"^a {said}; give floats in \\[0, 1\\] or integers 0-255$"):
        check_array(values, "a")
