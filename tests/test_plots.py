import numpy as np
import pytest
from PIL import Image

from fmnist import plots
from fmnist.facts import CLASS_NAMES
from fmnist.metrics import recall_shares


def opened(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return picture.size


MATH = "p$\\bad$.png"  # a name matplotlib would read as a formula, and fail on


def test_every_picture_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.random((40, 28, 28)), np.arange(40) % 10
    history = {"loss": [1.0, 0.8, 0.9], "val_loss": [1.1, 0.7, 0.9], "accuracy": [0.5, 0.6, 0.7],
               "val_accuracy": [0.4, 0.6, 0.5], "learning_rate": [1e-3, 1e-3, 1e-4]}
    bins = {"confidence": [0.5, 0.0, 0.9], "accuracy": [0.4, 0.0, 0.95], "counts": [10, 0, 30], "ece": 0.05}
    drawings = {
        "confusion": lambda p: plots.confusion_matrix_png(np.eye(10, dtype=int) * 5 + 1, np.full((10, 10), 0.1), p),
        "curves": lambda p: plots.curves_png(history, 2, p),
        "curves-empty": lambda p: plots.curves_png({}, None, p),
        "mistakes": lambda p: plots.mistakes_png(images[:4], labels[:4], labels[1:5], np.full(4, 0.9), p, 40),
        "mistakes-none": lambda p: plots.mistakes_png(images[:0], labels[:0], labels[:0], np.ones(0), p, 0),
        "reliability": lambda p: plots.reliability_png(bins, bins | {"accuracy_interval": [[0.1, 0.7], None, [0.8, 1]]},
                                                       p),  # a run scored before the intervals were kept has none
        "bars": lambda p: plots.bar_chart_png(["a", MATH], [0.3, 0.7], "title", p),
        "compare": lambda p: plots.compare_curves_png({"one": history, MATH: history}, p),
        "grouped": lambda p: plots.grouped_bars_png(list(CLASS_NAMES), {"x": [0.5] * 10, "y": [0.6] * 10}, "F1", p),
        "predictions": lambda p: plots.predictions_png(images[:3], np.full((3, 10), 0.1), images[:3] - 0.5,
                                                       ["a", "b", MATH], p),
        "evidence": lambda p: plots.evidence_png(images[:1], [MATH], {"for it": images[:1] - 0.5}, p),
        "evidence-zero": lambda p: plots.evidence_png(images[:2], ["a", "b"], {"x": np.zeros((2, 28, 28))}, p),
    }
    for name, draw in drawings.items():
        path = tmp_path / f"{name}.png"
        draw(path)
        width, height = opened(path)
        assert width > 100 and height > (50 if name == "mistakes-none" else 100), name


def test_reliability_bars_span_each_bins_interval(tmp_path):
    bins = {"confidence": [0.3, 0.9], "accuracy": [0.0, 0.9], "counts": [1, 500], "ece": 0.1}
    bluish = []
    for name, drawn in (("without", bins), ("with", bins | {"accuracy_interval": [[0.0, 0.79], [0.87, 0.92]]})):
        plots.reliability_png(drawn, bins, tmp_path / f"{name}.png")  # the bars of "before" (blue)
        with Image.open(tmp_path / f"{name}.png") as picture:
            rgb = np.asarray(picture.convert("RGB")).astype(int)
        bluish.append(((rgb[..., 2] > rgb[..., 0] + 40) & (rgb[..., 2] > rgb[..., 1] + 20)).sum())
    assert bluish[1] > bluish[0] + 150  # the one-image bin's bar: 0.79 of the axis' height, about 300 px


@pytest.mark.parametrize("per_class_available, missing", [(4, None), (4, 7)])
def test_samples_take_what_a_small_set_has(tmp_path, per_class_available, missing):
    labels = np.repeat(np.arange(10), per_class_available)
    if missing is not None:
        labels = labels[labels != missing]
    images = np.random.default_rng(1).random((len(labels), 28, 28))
    path = tmp_path / "samples.png"
    plots.samples_png(images, labels, path)  # asks for ten a class; drew nothing but an error before
    width, height = opened(path)
    assert height > width / 2  # ten rows of at most four (or one) columns


def test_the_samples_say_what_their_numbers_are_and_that_they_are_drawn_inverted(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    labels = np.repeat(np.arange(10), 2)
    plots.samples_png(np.random.default_rng(1).random((20, 28, 28)), labels, tmp_path / "samples.png")
    said = [t.get_text() for t in drawn[0].axes[0].texts]
    assert "random training images, each under its index in the training set; drawn dark on white (the model sees " \
           "them light on black)" in said


def test_curves_without_epochs_say_so_instead_of_empty_axes(tmp_path):
    path = tmp_path / "curves.png"
    plots.curves_png({}, None, path)
    with Image.open(path) as picture:
        grey = np.asarray(picture.convert("L"))
    height, width = grey.shape
    inside = grey[height // 2 - 10: height // 2 + 10, int(width * 0.33): int(width * 0.40)]  # the left panel's middle
    assert inside.min() < 100  # the message's dark letters, where empty axes have only faint grid lines


@pytest.mark.parametrize("draw", [lambda history, path: plots.curves_png(history, 1, path),
                                  lambda history, path: plots.compare_curves_png({"a": history}, path)])
@pytest.mark.parametrize("epochs", [1, 2])
def test_epochs_are_whole_numbers_on_the_axis(tmp_path, monkeypatch, draw, epochs):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))  # keep the figure to read its axes
    history = {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.5]}
    draw({key: values[:epochs] for key, values in history.items()}, tmp_path / "curves.png")
    for ax in drawn[0].axes:
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert shown and all(tick == int(tick) for tick in shown), shown


def test_an_answer_short_of_certain_never_reads_100_percent():
    assert [plots.percent(p) for p in (0.99996, 0.99949, 1.0, 0.1234)] == [">99.9%", "99.9%", "100.0%", "12.3%"]
    assert [plots.percent(p, 0) for p in (0.996, 0.994, 1.0)] == [">99%", "99%", "100%"]
    titles = plots.mistake_titles(np.array([0]), np.array([6]), np.array([0.99997]))
    assert titles == ["true T-shirt/top\npred Shirt >99.9%"]


def test_each_image_in_a_grid_is_drawn_on_its_own_scale(tmp_path):
    faint, strong = np.zeros((2, 28, 28)), np.zeros((2, 28, 28))
    faint[0, 9:19, 9:19], strong[1, 9:19, 9:19] = 10, 255  # the same square, one of them barely above zero
    path = tmp_path / "grid.png"
    plots.image_grid_png(faint + strong, ["a", "a"], path, columns=2)
    with Image.open(path) as picture:
        grey = np.asarray(picture.convert("L"))
    left, right = np.array_split(grey, 2, axis=1)
    assert (left < 40).sum() > 1000 and abs(int((left < 40).sum()) - int((right < 40).sum())) < 100


def test_an_occlusion_map_tints_the_image_red_for_blue_against_on_its_own_scale():
    image = np.full((28, 28), 0.5)
    evidence = np.zeros((28, 28))
    evidence[0, 0], evidence[0, 1] = 0.02, -0.01
    tinted = plots._evidence_rgba(image, evidence)
    red, blue, untouched = tinted[0, 0], tinted[0, 1], tinted[5, 5]
    assert red[0] > red[2] + 0.1 and blue[2] > blue[0] + 0.05
    assert np.allclose(untouched[:3], 0.6 * 0.97 + 0.4 * 0.5, atol=0.02)  # RdBu's white middle over mid-grey
    assert np.allclose(plots._evidence_rgba(image, evidence * 1000), tinted)


def test_an_answer_no_patch_moves_gets_a_faded_map_that_says_so():
    image, noise = np.full((28, 28), 0.5), np.full((28, 28), 2e-6)
    faded = plots._evidence_rgba(image, noise)
    assert np.allclose(faded, plots._evidence_rgba(image, np.zeros((28, 28))), atol=0.01)  # not drawn as evidence
    assert plots.map_peak(noise) == "peak < 0.1%" and plots.map_peak(-noise * 1e5) == "peak 20.0%"


def test_a_long_file_name_is_cut_in_the_middle_to_fit_above_its_image():
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    cut = plots._shortened("PXL_20240501_123456789.MP.jpg", fontsize=9)
    head, tail = cut.split("…")
    assert "PXL_20240501_123456789.MP.jpg".startswith(head) and "PXL_20240501_123456789.MP.jpg".endswith(tail)
    assert abs(len(head) - len(tail)) <= 1 and len(head) >= 8  # its two ends, as much of them as fits
    assert TextToPath().get_text_width_height_descent(cut, FontProperties(size=9), ismath=False)[0] <= 140
    assert plots._shortened("shirt.png", fontsize=9) == "shirt.png"


def test_the_confusion_matrix_leaves_empty_cells_blank_and_never_rounds_a_confusion_to_zero(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    matrix = np.diag([996] * 10)
    matrix[0, 1], matrix[0, 0] = 4, 992  # 4 of 996 T-shirts called trousers: 0.004 of the row
    plots.confusion_matrix_png(matrix, recall_shares(matrix), tmp_path / "confusion.png")
    counts, shares = ([t.get_text() for t in ax.texts] for ax in drawn[0].axes)
    assert counts[:3] == ["992", "4", ""] and shares[:3] == ["1.00", "<.01", ""]
    # The colour's scale said in the picture, which may be seen without the report's text.
    assert [ax.get_title() for ax in drawn[0].axes] == [
        "Counts (the 9,960 test images), coloured by their square root",
        "Row-normalised (share of each true class), coloured by its square root"]


def test_every_class_of_a_shown_answer_has_its_probability_written(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    probabilities = np.array([[0.004, 0, 0, 0, 0, 0, 0, 0, 0, 0.996]])
    plots.predictions_png(np.zeros((1, 28, 28)), probabilities, np.zeros((1, 28, 28)), ["a.png"], tmp_path / "p.png")
    bars = drawn[0].axes[2]
    assert [t.get_text() for t in bars.texts] == ["0.4%"] + ["0.0%"] * 8 + ["99.6%"]  # the runner-up shows


def test_a_shown_answers_rows_keep_their_text_inside_the_picture_and_apart(tmp_path, monkeypatch):
    """Placed by hand (no tight_layout): the widest titles, names and labels stay inside the picture, nothing over
    anything else."""
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    probabilities = np.eye(10)[[0, 9, 0]]  # T-shirt/top and Ankle boot, the longest names, each certain: "100.0%"
    # Names cut to fit by their drawn width: "W" is three times as wide as "i".
    names = ["IMG_20261206_123456_long_photo_name.jpg", "W" * 40 + ".png", "i" * 30 + ".png"]
    plots.predictions_png(np.zeros((3, 28, 28)), probabilities, np.ones((3, 28, 28)), names, tmp_path / "p.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    (fig,) = drawn
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]
    assert all(fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 and fig.bbox.y0 <= b.y0 and b.y1 <= fig.bbox.y1
               for b in boxes), (fig.bbox, boxes)
    assert not [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[:i]) if a.overlaps(b)]
    assert [ax.get_title() for ax in fig.axes[::3]] == [f"{name}\nas the model saw it" for name in (
        "IMG_20261206…oto_name.jpg", "WWWWWWWW…WWWW.png", "i" * 30 + ".png")]
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["0%", "20%", "40%", "60%", "80%", "100%"]


def test_a_comparison_of_many_runs_keeps_every_run_in_its_legend(tmp_path):
    import warnings

    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]}
    names = ["_baseline", *(f"run{i}" for i in range(1, 30))]  # "_": what matplotlib leaves out of a legend by itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the axes, a long legend ran off the picture, with a layout warning
        plots.compare_curves_png({name: history for name in names}, tmp_path / "curves.png")
        plots.grouped_bars_png(list(CLASS_NAMES), {name: [0.5] * 10 for name in names}, "F1", tmp_path / "f1.png")
        long_names = {"a" * 220: history, "b" * 220: history}  # a wide legend collapsed the axes to nothing
        plots.compare_curves_png(long_names, tmp_path / "long.png")
    from matplotlib.lines import Line2D

    fig = plots._figure()
    lines = [Line2D([], []) for _ in names]
    plots._run_legend(fig, lines, names)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == names and legend._ncols == 2
    assert legend.get_texts()[0].get_fontsize() == plots.LEGEND_POINTS >= 9  # read at a page's width
    fig = plots._figure()
    plots._run_legend(fig, lines[:1], ["a" * 220])
    assert fig.legends[0].get_texts()[0].get_text() == "a" * (plots.LEGEND_CHARS - 1) + "…"


def test_a_drawing_that_fails_midway_leaves_no_figure_held(tmp_path):
    import matplotlib.pyplot as plt

    held = plt.get_fignums()
    with pytest.raises(ValueError):
        plots.bar_chart_png(["a"], [], "no values", tmp_path / "bars.png")  # fails before it is saved
    assert plt.get_fignums() == held and not (tmp_path / "bars.png").exists()


def test_pictures_say_what_they_show_where_a_reader_would_guess(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    history = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85], "accuracy": [0.5, 0.6, 0.65],
               "val_accuracy": [0.4, 0.5, 0.55], "learning_rate": [1e-3, 1e-3, 1e-4]}
    plots.curves_png(history, 3, tmp_path / "curves.png")
    for ax, ylabel, top in zip(drawn[0].axes, ("loss (mean over the epoch)", "share of images right"), (True, False)):
        assert ax.get_ylabel() == ylabel
        assert [t.get_text() for t in ax.texts] == ["lr 1e-04"]  # the rate the plateau's drop went to, at epoch 3
        assert (ax.texts[0].get_position()[1] > 0.5) is top  # away from late curves: loss falls, accuracy rises
        # The kept epoch named as the report names it, and why it is kept
        assert "kept: epoch 3, the lowest val_loss" in ax.get_legend_handles_labels()[1]
    plots.compare_curves_png({"a": history, "b": history}, tmp_path / "compare.png")  # the same axes, side by side
    assert [ax.get_ylabel() for ax in drawn.pop().axes] == ["loss (mean over the epoch)", "share of images right"]
    plots.grouped_bars_png(list(CLASS_NAMES), {"a": [0.5] * 10, "b": [0.9] * 10}, "F1", tmp_path / "f1.png")
    assert drawn[1].axes[0].get_title() == "F1 (axis from 0.40, not 0)"  # the bars do not start at 0
    plots.grouped_bars_png(list(CLASS_NAMES), {"a": [0.0535] * 10}, "F1", tmp_path / "f1.png")
    assert drawn.pop().axes[0].get_title() == "F1"  # from 0 itself, where a tick below the lowest bar is 0
    plots.grouped_bars_png(list(CLASS_NAMES), {"a": [0.5] * 10, "b": [0.9] * 10}, "F1", tmp_path / "f1.png",
                           spread={"a": [0.2] * 10})  # a group's mean, whiskers ± its sd: the axis shows them whole
    whiskered = drawn.pop()
    assert whiskered.axes[0].get_title() == "F1 (axis from 0.20, not 0)"
    assert [len(c.lines[2][0].get_segments()) for c in whiskered.axes[0].containers if hasattr(c, "has_yerr")] == [10]
    plots.mistakes_png(np.zeros((4, 28, 28)), np.zeros(4, int), np.ones(4, int), np.full(4, 0.9), tmp_path / "m.png",
                       total=1025)
    assert ("The 4 most confident of the 1,025 test mistakes, with the model's (calibrated) probability for the class "
            "it predicted") in [t.get_text() for t in drawn[2].axes[0].texts]
    unsure = np.full((1, 10), 0.503 / 9)
    unsure[0, 6] = 0.497  # Shirt, under half: titled as predict's text says it, not rounded up to 50%
    plots.predictions_png(np.zeros((1, 28, 28)), unsure, np.zeros((1, 28, 28)), ["a.png"], tmp_path / "seen.png")
    assert "Shirt 49.7%" in [ax.get_title() for ax in drawn.pop().axes]
    bins = {"confidence": [0.5, 0.95], "accuracy": [0.4, 0.96], "counts": [30, 5700], "ece": 0.02}
    plots.reliability_png(bins, bins, tmp_path / "reliability.png")
    counts = drawn.pop().axes[1]  # the largest bin, 5,700 images, under the labelled 10,000: not on the frame
    assert counts.get_ylim()[1] == pytest.approx(10_000)


def test_reference_bars_are_told_from_the_contenders(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    plots.bar_chart_png(["ours", "theirs", "floor"], [1.0, 2.0, 0.5], "s", tmp_path / "b.png", references=1,
                        xlabel="seconds")
    ax = drawn[0].axes[0]
    assert [bar.get_hatch() or "" for bar in ax.patches] == ["", "", "//"]  # a limit, not a contender
    assert len({bar.get_facecolor() for bar in ax.patches[:2]} | {ax.patches[2].get_facecolor()}) == 2
    assert ax.get_xlabel() == "seconds"
