"""Draw the report's pictures with matplotlib (and scikit-learn's confusion matrix), each PNG written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmnist import __version__
from fmnist.artifacts import HISTORY, PNG_SOFTWARE, kept_because, write_atomic
from fmnist.explain import FAINT_BELOW
from fmnist.facts import CLASS_NAMES, IMAGE_SIDE

DPI = 110
LEGEND_ROWS = 20  # entries in a column of a comparison's legend (a column takes the picture's height)
LEGEND_CHARS = 40  # of a run's name in a legend
LEGEND_POINTS = 9  # its type: the picture is scaled down to the page's width, and 7 points became unreadable


def _figure(**figure_kw):
    """A figure pyplot does not hold: one whose drawing fails midway is freed with it, not kept for the life of the
    process (a tune, --seeds or serve process draws many)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg")  # files only: never needs a display (scikit-learn's confusion matrix imports pyplot)
    # Run and file names are drawn as written: "$" would start a formula ("p$\bad$.png" failed to draw).
    matplotlib.rcParams["text.parse_math"] = False
    return Figure(**figure_kw)


def _epoch_axis(ax, epochs: int) -> None:
    """Whole epochs on the x axis (a short run got ticks at 1.2, 1.4, ...; one epoch alone, at 0.96, 0.98, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(0.5, epochs + 0.5)


def _save(fig, path: Path, trim: bool = False) -> None:
    """Write the figure as it is laid out (tight_layout keeps each one's text inside it), or ``trim`` it to what it
    draws, text outside its axes included: trimming draws the figure twice."""
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight" if trim else None,
                                                     metadata={"Software": f"{PNG_SOFTWARE} {__version__}"}))


def confusion_matrix_png(matrix: Sequence[Sequence[int]], shares: np.ndarray, path: Path) -> None:
    """Counts and each true class's shares (metrics.recall_shares) as heatmaps side by side, coloured by the square
    root; an empty cell is left blank, and a share that rounds to 0 but is not reads "<.01"."""
    from matplotlib.colors import PowerNorm
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix)
    fig = _figure(figsize=(15, 7))
    axes = fig.subplots(1, 2)
    for ax, data, fmt, title in (
        (axes[0], counts, "{:d}", f"Counts (the {counts.sum():,} test images), coloured by their square root"),
        (axes[1], shares, "{:.2f}", "Row-normalised (share of each true class), coloured by its square root"),
    ):
        # The square root, so a hundred confusions stand out beside the diagonal's thousand.
        norm = PowerNorm(0.5, vmin=0, vmax=max(float(data.max()), 1e-12))
        shown = ConfusionMatrixDisplay(data, display_labels=CLASS_NAMES).plot(
            ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, text_kw={"fontsize": 8}, im_kw={"norm": norm})
        for (i, j), text in np.ndenumerate(shown.text_):
            value = data[i, j]
            text.set_text("" if counts[i, j] == 0 else "<.01" if fmt == "{:.2f}" and value < 0.005 else
                          fmt.format(value))
            text.set_color("white" if norm(value) > 0.6 else "#08306b")  # sklearn's pick follows a linear scale
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def curves_png(history: dict[str, list[float]], kept: int | None, path: Path, scheduled: bool = False) -> None:
    """Loss and accuracy per epoch, train and validation, with the ``kept`` epoch and each drop of the learning rate on
    a plateau marked; a ``scheduled`` run (cosine: the rate lowered every step) keeps its last, its drops no events."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig = _figure(figsize=(13, 4.5))
    axes = fig.subplots(1, 2)
    rates = [] if scheduled else history.get("learning_rate", [])
    drops = [i + 1 for i in range(1, len(rates)) if rates[i] < rates[i - 1]]
    kept_label = f"kept: epoch {kept}, {kept_because(scheduled)}"
    # Each drop's rate is written where its panel's curves are not, late in training: loss falls, accuracy rises.
    for ax, key, title, ylabel, rate_y in ((axes[0], "loss", "Loss", "loss (mean over the epoch)", 0.98),
                                           (axes[1], "accuracy", "Accuracy", "share of images right", 0.02)):
        ax.plot(epochs, history.get(key, []), label="train", marker=".")
        ax.plot(epochs, history.get(f"val_{key}", []), label="validation", marker=".")
        if kept:
            ax.axvline(kept, color="green", linestyle="--", label=kept_label)
        for i, epoch in enumerate(drops):
            ax.axvline(epoch, color="grey", linestyle=":",
                       label="learning rate lowered: from the epoch marked, to the rate written" if i == 0 else None)
            # The rate the epoch began with, written along its line: what each drop went to.
            ax.text(epoch, rate_y, f"lr {rates[epoch - 1]:.0e}", transform=ax.get_xaxis_transform(), rotation=90,
                    ha="right", va="top" if rate_y > 0.5 else "bottom", fontsize=8, color="dimgrey")
        _epoch_axis(ax, len(epochs))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    # One legend for both panels, below them: inside, it covered the first epochs, where the curves start.
    handles, labels = axes[0].get_legend_handles_labels()
    if len(epochs):
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    else:  # rather than empty axes that look like a drawing fault
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.text(0.5, 0.5, f"no epochs recorded: {HISTORY} is missing or empty", ha="center", va="center",
                 fontsize=14, bbox={"facecolor": "white", "edgecolor": "grey"})
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, path)


def image_grid_png(images: np.ndarray, titles: Sequence[str], path: Path, columns: int, row_labels=None,
                   heading: str | None = None) -> None:
    """A grid of 28x28 images, each on its own scale and with a small title; optional labels down the left side and
    a heading above."""
    tiles = [_gray(np.asarray(image, dtype=np.float64) / (np.max(image) or 1)) for image in images]
    rows = max(1, int(np.ceil(len(tiles) / columns)))
    grid = [tiles[r * columns:(r + 1) * columns] for r in range(rows)]
    _tiles_png(grid, [list(titles[r * columns:(r + 1) * columns]) for r in range(rows)], path, row_labels or (),
               heading)


TILE_GAP = 10  # image pixels between tiles across: room for a title a third wider than its image
LINE_HEIGHT = 3.3  # image pixels a line of 7-point text takes
PIXELS_PER_INCH = DPI / 4  # each of an image's pixels a square of 4 x 4 in the PNG: about an inch a 28x28 image


def _tiles_png(grid: list[list[np.ndarray]], titles: list[list[str]], path: Path, row_labels: Sequence[str] = (),
               heading: str | None = None) -> None:
    """Rows of RGBA tiles, framed, each under its title, drawn as one picture in one axes: an axes per tile took
    most of a report's drawing time (their ticks, spines and layout)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    side, columns = IMAGE_SIDE, max((len(row) for row in grid), default=0) or 1
    lines = [max((title.count("\n") + 1 for title in row if title), default=0) for row in titles]
    bands = [round(4.5 + LINE_HEIGHT * n) if n else 3 for n in lines]  # sized by the row's longest title
    tops = np.cumsum([0] + [band + side for band in bands])  # where each row's band starts
    canvas = np.ones((tops[-1] + 2, columns * (side + TILE_GAP), 4))  # white, opaque, a margin below for frames
    frames, texts = [], []
    for r, (row, row_titles) in enumerate(zip(grid, titles)):
        y = int(tops[r] + bands[r])
        for c, tile in enumerate(row):
            x = c * (side + TILE_GAP) + TILE_GAP // 2
            canvas[y:y + side, x:x + side] = tile
            frames.append(Rectangle((x - 0.5, y - 0.5), side, side))
            texts.append((x + side / 2 - 0.5, y - 1.5, row_titles[c] if c < len(row_titles) else ""))
    height, width = canvas.shape[:2]
    fig = _figure(figsize=(width / PIXELS_PER_INCH, height / PIXELS_PER_INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.add_collection(PatchCollection(frames, facecolor="none", edgecolor="black", linewidth=0.8))
    for x, y, text in texts:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7)
    for r, label in enumerate(row_labels):
        ax.text(TILE_GAP // 2 - 2, tops[r] + bands[r] + side / 2, label, ha="right", va="center", fontsize=8)
    if heading:
        ax.text(width / 2, -2, heading, ha="center", va="bottom", fontsize=8)
    ax.set_axis_off()
    _save(fig, path, trim=True)  # the labels and titles stand outside the one axes


def samples_png(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 10, seed: int = 0) -> None:
    """One row per class of random training images, class names down the side (fewer columns for a small set)."""
    rng = np.random.default_rng(seed)
    columns = max(1, min(per_class, int(np.bincount(labels, minlength=len(CLASS_NAMES)).min())))
    rows = [rng.choice(np.flatnonzero(labels == c), size=columns, replace=False) if np.any(labels == c)
            else np.full(columns, -1) for c in range(len(CLASS_NAMES))]
    chosen = np.concatenate(rows)
    blank = np.zeros_like(images[:1])
    pictures = np.concatenate([images[i:i + 1] if i >= 0 else blank for i in chosen])
    titles = [f"#{i}" if i >= 0 else "none" for i in chosen]
    image_grid_png(pictures, titles, path, columns=columns, row_labels=list(CLASS_NAMES),
                   heading="random training images, each under its index in the training set; drawn dark on white "
                           "(the model sees them light on black)")


def percent(probability: float, decimals: int = 1) -> str:
    """A probability as a percentage, where one short of certain never reads 100 (">99.9%", not "100.0%")."""
    text = f"{probability:.{decimals}%}"
    if probability < 1 and float(text[:-1]) >= 100:
        return ">" + f"{1 - 10 ** -(decimals + 2):.{decimals}%}"
    return text


def mistake_titles(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray) -> list[str]:
    return [f"true {CLASS_NAMES[t]}\npred {CLASS_NAMES[p]} {percent(c)}" for t, p, c in zip(y_true, y_pred, confidence)]


def mistakes_png(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray,
                 path: Path, total: int) -> None:
    """The most confident of the ``total`` test mistakes, each with its true and predicted class."""
    if not len(images):  # a picture that says so, rather than none, or an empty one that looks like a fault
        fig = _figure(figsize=(5, 1))
        fig.text(0.5, 0.5, "no mistakes: every test image is classified right", ha="center", va="center")
        _save(fig, path)
        return
    image_grid_png(images, mistake_titles(y_true, y_pred, confidence), path, columns=8,
                   heading=f"The {len(images)} most confident of the {total:,} test mistakes, with the model's "
                           "(calibrated) probability for the class it predicted")


def bar_chart_png(labels: Sequence[str], values: Sequence[float], title: str, path: Path, references: int = 0,
                  xlabel: str | None = None) -> None:
    """Horizontal bars with their values written at the end; the last ``references`` (limits, not contenders) grey and
    hatched."""
    fig = _figure(figsize=(8, 0.6 * len(labels) + 1))
    ax = fig.subplots()
    contenders = len(labels) - references
    bars = ax.barh(list(labels), list(values), color=["#4c72b0"] * contenders + ["#b0b0b0"] * references,
                   hatch=[""] * contenders + ["//"] * references)
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, max(values) * 1.12)  # room for the longest bar's label inside the frame
    ax.invert_yaxis()
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    _save(fig, path)


def reliability_png(before: dict, after: dict, path: Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, with the diagonal and each bin's 95%
    interval; below, how many images each bin holds (a bin of three images that are all wrong is no alarm)."""
    from matplotlib.ticker import LogFormatter

    fig = _figure(figsize=(5.5, 6.5))
    ax, counts = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for bins, label in ((before, "before scaling"), (after, "after scaling")):
        used = [i for i, c in enumerate(bins["counts"]) if c]
        confidence = [bins["confidence"][i] for i in used]
        accuracy = [bins["accuracy"][i] for i in used]
        line, = ax.plot(confidence, accuracy, marker="o", label=f"{label} (ECE {bins['ece']:.4f})")
        if "accuracy_interval" in bins:  # not in the metrics of runs scored before it was
            low, high = np.array([bins["accuracy_interval"][i] for i in used]).T
            ax.errorbar(confidence, accuracy, yerr=(accuracy - low, high - accuracy), fmt="none", capsize=3,
                        ecolor=line.get_color(), alpha=0.6)
        counts.plot(confidence, [bins["counts"][i] for i in used], marker="o", color=line.get_color())
    ax.set_ylabel("accuracy")
    bars = " (bars: 95% intervals)" if "accuracy_interval" in after else ""
    ax.set_title(f"Reliability, {len(after['counts'])} bins, test set{bars}")
    ax.legend()
    ax.grid(alpha=0.3)
    counts.set_yscale("log")
    largest = max((c for bins in (before, after) for c in bins["counts"]), default=0)
    if largest > 0:  # the largest bin under a labelled line, not on the frame with no number above it
        counts.set_ylim(top=10 ** np.ceil(np.log10(largest) + 1e-9))
    # Plain numbers, at 2 and 5 between powers of ten when the counts span little: the log axis' own labels are
    # written in maths text, which _figure turns off ("$" in run names).
    counts.yaxis.set_major_formatter(LogFormatter())
    counts.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.5)))
    counts.set_ylabel("images (log scale)")
    counts.set_xlabel("confidence (top probability)")
    counts.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _run_legend(fig, handles: list, labels: list[str]) -> None:
    """A legend of ``labels`` (one a run, after any key to the lines' styles) beside the axes, in columns of at most
    LEGEND_ROWS (inside them, a dozen runs ran off the picture); every label kept, "_x" too, which matplotlib drops."""
    # Long names cut (the page's tables give them whole): a wide legend collapsed the axes to nothing.
    shown = [label if len(label) <= LEGEND_CHARS else label[:LEGEND_CHARS - 1] + "…" for label in labels]
    fig.legend(handles, shown, loc="outside right upper", fontsize=LEGEND_POINTS,
               ncols=-(-len(labels) // LEGEND_ROWS))


def run_colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per name, in matplotlib's cycle: given to every chart of a page, a run is one colour in all."""
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def compare_curves_png(histories: dict[str, dict[str, list[float]]], path: Path,
                       colours: dict[str, str] | None = None) -> None:
    """Loss and accuracy of several runs on shared axes: validation solid, training dashed, a colour a run (``colours``,
    else the cycle's); each later run thinner, with its own marker, so one matching an earlier run still shows."""
    from matplotlib.lines import Line2D

    fig = _figure(figsize=(13, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = colours or run_colours(list(histories))
    markers = "o^sDvP*"  # 7 against 10 colours: no two of the first 70 runs are drawn alike
    styles = [{"color": colours[name], "linewidth": max(1.2, 5.0 - 1.8 * i), "zorder": 2 + i,
               "marker": markers[i % len(markers)], "markersize": max(3.0, 7.0 - 1.5 * i)}
              for i, name in enumerate(histories)]
    for ax, key, title, ylabel in ((axes[0], "loss", "Loss", "loss (mean over the epoch)"),
                                   (axes[1], "accuracy", "Accuracy", "share of images right")):
        for style, history in zip(styles, histories.values()):
            epochs = np.arange(1, len(history.get(key, [])) + 1)
            ax.plot(epochs, history.get(f"val_{key}", []), **style)
            ax.plot(epochs, history.get(key, []), linestyle="--", alpha=0.6,
                    **{k: v for k, v in style.items() if not k.startswith("marker")})
        _epoch_axis(ax, max((len(h.get(key, [])) for h in histories.values()), default=0))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    lines = [Line2D([], [], color="black"), Line2D([], [], color="black", linestyle="--")]
    _run_legend(fig, [*lines, *(Line2D([], [], **style) for style in styles)],
                ["validation", "training", *histories])
    _save(fig, path)


def grouped_bars_png(categories: Sequence[str], series: dict[str, Sequence[float]], title: str, path: Path,
                     spread: dict[str, Sequence[float]] | None = None, colours: dict[str, str] | None = None) -> None:
    """A group of bars per category, a bar per series (its colour in ``colours``, else the cycle's), whiskered ± its
    ``spread`` where given; the 0-1 scale starts on the tenth at or below 0.05 under the lowest bar or whisker, and ends
    at 1."""
    fig = _figure(figsize=(13, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    positions = np.arange(len(categories))
    spread = spread or {}
    colours = colours or run_colours(list(series))
    bars = [ax.bar(positions + (i - (len(series) - 1) / 2) * width, list(values), width, color=colours[name],
                   yerr=spread.get(name), capsize=2 if name in spread else 0)
            for i, (name, values) in enumerate(series.items())]
    ax.set_xticks(positions, list(categories), rotation=30, ha="right")
    lowest = min(v - e for name, values in series.items()
                 for v, e in zip(values, spread.get(name, [0.0] * len(values))))
    # On a tick: a start just above 0 was captioned "axis from 0.00, not 0".
    low = max(0.0, np.floor(round((lowest - 0.05) * 10, 6)) / 10)
    ax.set_ylim(low, 1)  # small gaps between runs stay visible; the title says the bars do not start at 0
    ax.set_title(f"{title} (axis from {low:.2f}, not 0)" if low > 0 else title)
    ax.grid(axis="y", alpha=0.3)
    _run_legend(fig, bars, list(series))
    _save(fig, path)


def _gray(image: np.ndarray, cmap: str = "gray_r") -> np.ndarray:
    """A 28x28 image of values in [0, 1] as RGBA: dark on light (gray_r), or light on dark as the model sees it."""
    from matplotlib import colormaps

    return colormaps[cmap](np.clip(np.asarray(image, dtype=np.float64).reshape(IMAGE_SIDE, IMAGE_SIDE), 0, 1))


def _evidence_rgba(image: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """The image in gray under its occlusion map: red where the pixels speak for the class, blue against."""
    # Each map on its own symmetric scale, so 0 stays white; never finer than FAINT_BELOW, or the float noise of an
    # answer no patch moves (changes of 1e-6) would be drawn as strongly as a real one.
    scale = max(float(np.abs(evidence).max()), FAINT_BELOW)
    from matplotlib import colormaps

    over = colormaps["RdBu_r"]((np.asarray(evidence, dtype=np.float64) / scale + 1) / 2)
    return 0.6 * over + 0.4 * _gray(image)  # the map at 60% opacity over the image


def _show(ax, picture: np.ndarray) -> None:
    ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def map_peak(evidence: np.ndarray) -> str:
    """An occlusion map's peak, as its title says it: the largest mean change of probability at a pixel (over the
    patches that cover it; one patch alone may move it more)."""
    largest = float(np.abs(evidence).max()) if np.size(evidence) else 0.0
    return f"peak {'< 0.1%' if largest < 0.001 else f'{largest:.1%}'}"


def evidence_png(images: np.ndarray, titles: Sequence[str], maps: dict[str, np.ndarray], path: Path) -> None:
    """One column per image: the image, then one row per set of occlusion maps (the row's label names the class),
    each map under its peak."""
    grid = [[_gray(image) for image in images]]
    grid += [[_evidence_rgba(image, evidence[c]) for c, image in enumerate(images)] for evidence in maps.values()]
    map_titles = [[map_peak(evidence[c]) for c in range(len(images))] for evidence in maps.values()]
    _tiles_png(grid, [list(titles), *map_titles], path, ["image", *maps],
               heading="red: blanking these pixels lowers the class's probability p, blue: raises it; above each map, "
                       f"its peak, the largest mean change of p at a pixel (under {FAINT_BELOW:.0%}, the map is faded)")


# predictions_png's row, in inches: the two pictures square, the bars wider; room above each for its title and below
# for the bars' ticks, and at the left of the bars for the class names.
ROW_IN, PICTURE_IN, TITLE_IN, PICTURE_X_IN, BARS_X_IN, BARS_W_IN = 2.4, 1.65, 0.45, (0.2, 2.4), 5.1, 4.25


def predictions_png(
    images: np.ndarray, probabilities: np.ndarray, maps: np.ndarray, names: list[str], path: Path
) -> None:
    """One row per input: the 28x28 image the model saw, where it looked (occlusion map), its probabilities."""
    from matplotlib.ticker import PercentFormatter

    # Placed by hand, the same in every row: tight_layout and a trimmed save took most of 14 s for 64 rows.
    width, height = BARS_X_IN + BARS_W_IN + 0.3, ROW_IN * len(images)
    fig = _figure(figsize=(width, height))
    for row, (image, probs, evidence, name) in enumerate(zip(images, probabilities, maps, names)):
        bottom = height - row * ROW_IN - TITLE_IN - PICTURE_IN
        image_ax, evidence_ax = (fig.add_axes((x / width, bottom / height, PICTURE_IN / width, PICTURE_IN / height))
                                 for x in PICTURE_X_IN)
        bar_ax = fig.add_axes((BARS_X_IN / width, bottom / height, BARS_W_IN / width, PICTURE_IN / height))
        _show(image_ax, _gray(image, "gray"))  # as the model saw it: light on dark
        image_ax.set_title(f"{_shortened(name, fontsize=9)}\nas the model saw it", fontsize=9)
        best = int(np.argmax(probs))
        _show(evidence_ax, _evidence_rgba(image, evidence))
        evidence_ax.set_title(f"red: for {CLASS_NAMES[best]}, blue: against\n{map_peak(evidence)}", fontsize=9)
        colours = ["tab:gray"] * len(CLASS_NAMES)
        colours[best] = "tab:blue"
        bars = bar_ax.barh(range(len(CLASS_NAMES)), probs, color=colours)
        bar_ax.bar_label(bars, [percent(p) for p in probs], padding=2, fontsize=7)  # a 0.4% runner-up shows too
        bar_ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=8)
        bar_ax.invert_yaxis()
        bar_ax.set_xlim(0, 1.15)  # room for a certain answer's label
        bar_ax.set_xticks(np.linspace(0, 1, 6))
        bar_ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))  # as the bars' labels: 44.8% at 0.448
        bar_ax.tick_params(axis="x", labelsize=8)
        bar_ax.set_title(f"{CLASS_NAMES[best]} {percent(probs[best])}", fontsize=9)  # as predict says: 49.7%, not 50%
    _save(fig, path)


def _shortened(name: str, fontsize: float, most_pt: float = 140.0) -> str:
    """A file name cut in the middle to fit above its image, at most ``most_pt`` points wide at ``fontsize``: a phone's
    photo names run past the column, into the next column's title (measured, as "WWW" is three times "iii")."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font, measure = FontProperties(size=fontsize), TextToPath()

    def width(text: str) -> float:  # of its widest line: a line break is drawn as one, not as a glyph
        return max(measure.get_text_width_height_descent(line, font, ismath=False)[0] for line in text.split("\n"))

    shown, keep = name, len(name)
    while keep > 2 and width(shown) > most_pt:
        keep -= 1
        shown = f"{name[:keep // 2]}…{name[len(name) - (keep - keep // 2):]}"
    return shown
