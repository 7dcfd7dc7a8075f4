"""`fmnist bench`: time our training and inference against hand-written scripts, the CPU's FLOP floor and the
epoch's matrix products alone."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts, runs
from fmnist.data import Dataset, load_dataset, to_features
from fmnist.errors import FmnistError, first_line
from fmnist.facts import NUM_CLASSES, NUM_FEATURES
from fmnist.settings import BACKENDS, PREFERRED_BACKEND, TrainSettings, dense_weights

log = logging.getLogger(__name__)
REFERENCE_DIR = Path(__file__).parent / "reference"
INFERENCE_BATCHES = (1, 64, 1024, 10000)
# One contender's timing process, per epoch it times (six epochs took 15-70 s here); past this it is stuck, and
# left out.
CONTENDER_TIMEOUT_S_PER_EPOCH = 300
# The end of a failed contender's stderr that the report keeps: a traceback's last frames and its error, or a fatal
# runtime error's message, which its stack trace can follow.
STDERR_TAIL_LINES = 20
MatmulShape = tuple[int, int, int]  # a matrix product's (m, k, n): (m, k) by (k, n)


class LeftOut(Exception):
    """A contender that could not be timed: why, in one line, and the end of what it wrote to stderr."""

    def __init__(self, why: str, stderr: str = "") -> None:
        super().__init__(why)
        self.stderr_tail = stderr.strip().splitlines()[-STDERR_TAIL_LINES:]


def dense_flops_per_image(hidden_sizes: tuple[int, ...]) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per image, 2 per multiply-add: backward costs twice the forward, but for
    the gradient of the pixels, which nothing needs (JAX and TensorFlow skip it)."""
    forward = 2.0 * dense_weights(hidden_sizes)
    return forward, 3.0 * forward - 2.0 * NUM_FEATURES * hidden_sizes[0]


def gemm_gflops(size: int = 2048, repeats: int = 7) -> float:
    """Best-of-N float32 GEMM throughput with NumPy on all cores, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), np.float32), rng.random((size, size), np.float32)
    a @ b  # warm up the BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def matrix_products(hidden_sizes: tuple[int, ...], batch: int) -> tuple[list[MatmulShape], list[MatmulShape]]:
    """The (m, k, n) matrix products of a dense network on ``batch`` images: (forward, backward); backward is each
    layer's weight gradient and, past the first layer, its input's gradient."""
    widths = (NUM_FEATURES, *hidden_sizes, NUM_CLASSES)
    layers = list(zip(widths, widths[1:]))
    forward = [(batch, k, n) for k, n in layers]
    backward = [(k, batch, n) for k, n in layers] + [(batch, n, k) for k, n in layers[1:]]
    return forward, backward


def gemm_seconds(m: int, k: int, n: int, repeats: int = 7) -> float:
    """Best-of-N seconds of one float32 (m, k) by (k, n) product with NumPy into the same output, as a framework
    reuses its buffers (a new one each call would add its page faults), each timing at least 5 ms of calls."""
    rng = np.random.default_rng(0)
    a, b, out = rng.random((m, k), np.float32), rng.random((k, n), np.float32), np.empty((m, n), np.float32)

    def run(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=out)
        return time.perf_counter() - start

    calls = 1
    while run(calls) < 0.005:  # the first call warms up, as timeit's autorange does
        calls *= 2
    return min(run(calls) for _ in range(repeats)) / calls


def epoch_matmul_seconds(hidden_sizes: tuple[int, ...], batch: int, train_images: int, validation_batch: int,
                         validation_images: int) -> float:
    """An epoch's matrix products alone, each timed with NumPy at the shape it has (a last, smaller batch too): the
    arithmetic the FLOP floor counts, at the speed the same BLAS reaches on matrices this small."""

    def batch_s(size: int, training: bool) -> float:
        forward, backward = matrix_products(hidden_sizes, size)
        return sum(gemm_seconds(*shape) for shape in (forward + backward if training else forward))

    def pass_s(images: int, size: int, training: bool) -> float:
        whole, rest = divmod(images, size)
        return sum(count * batch_s(b, training) for count, b in ((whole, size), (1, rest)) if count and b)

    return pass_s(train_images, batch, training=True) + pass_s(validation_images, validation_batch, training=False)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_rss_mib() -> float:
    """This process's peak resident memory: on Linux its own high-water mark (VmHWM), which starts anew at exec."""
    # Not ru_maxrss on Linux: it carries the parent's peak into a child that subprocess starts, so a timing process
    # would report the bench's own peak wherever that is the larger.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # in kB
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0**2 if sys.platform == "darwin" else 1024.0)


def epoch_clock() -> Any:
    """A Keras callback timing each whole epoch (its steps, validation and every callback before it: the backup's
    save too, which the history's seconds, taken by the first callback, leave out); give it last."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds: list[float] = []
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

    return EpochClock()


def worker(backend: str, epochs: int, data_dir: str | None = None) -> dict[str, Any]:
    """In a fresh process: train our way for ``epochs`` and time compiled inference; return the figures."""
    from fmnist.backend import activate, tensorflow_hidden_from_keras

    activate(backend)
    from fmnist.inference import compiled_forward
    from fmnist.train import fit

    dataset = load_dataset(Path(data_dir) if data_dir else None)
    settings = TrainSettings(epochs=epochs, name="bench", early_stopping_patience=epochs + 1)
    clock = epoch_clock()
    with tempfile.TemporaryDirectory() as run_dir, tensorflow_hidden_from_keras(backend):
        model, _, _ = fit(settings, dataset, Path(run_dir), backend, extra_callbacks=[clock])
    peak_training_rss = _peak_rss_mib()
    forward = compiled_forward(model)
    x = to_features(dataset.x_test)
    throughput = {}
    for batch in INFERENCE_BATCHES:
        chunk = x[:batch]
        forward(chunk)  # compile this shape
        reps = max(3, 20000 // batch)
        throughput[str(batch)] = batch * reps / _timed(lambda: [forward(chunk) for _ in range(reps)])
    latencies = []
    for i in range(2000):
        image = x[i:i + 1]
        start = time.perf_counter()
        forward(image)
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "epoch_seconds": clock.seconds,
        "peak_training_rss_mib": peak_training_rss,
        "inference_images_per_s": throughput,
        "single_image_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))},
    }


# Run before each timing process (Linux), in a Python of its own that then becomes it (the signal outlives exec):
# the process is killed when the bench is, even by SIGKILL, which leaves the bench no moment to stop it; else it
# would go on using the cores the next job is timed on. Not a preexec_fn: forking the bench, which has JAX's threads
# running, could deadlock. The signal comes when the thread that started it ends: the bench's main thread.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; PR_SET_PDEATHSIG = 1; ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); os.execv(sys.argv[2], sys.argv[2:])"
)


def _dying_with_this_process(cmd: list[str]) -> list[str]:
    """``cmd``, run so that it ends when this process does (Linux; elsewhere as it is)."""
    if sys.platform != "linux":
        return cmd
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *cmd]


def _run_json(label: str, cmd: list[str], epochs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the timing subprocess of ``label`` for ``epochs``; its last stdout line is JSON holding its epochs'
    seconds. Raises LeftOut when it fails, hangs or prints no such line."""
    timeout = CONTENDER_TIMEOUT_S_PER_EPOCH * epochs
    try:
        result = subprocess.run(_dying_with_this_process(cmd), capture_output=True, text=True,
                                env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired as stuck:
        stderr = stuck.stderr.decode(errors="replace") if isinstance(stuck.stderr, bytes) else stuck.stderr or ""
        raise LeftOut(f"{label} took over {timeout} s", stderr) from None
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:]
        how = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
        raise LeftOut(f"{label} failed ({how}){f': {last[0]}' if last else ''}", result.stderr)
    try:
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        figures = None
    seconds = figures.get("epoch_seconds") if isinstance(figures, dict) else None
    if not (isinstance(seconds, list) and seconds
            and all(isinstance(s, (int, float)) and np.isfinite(s) and s > 0 for s in seconds)):
        raise LeftOut(f"{label} printed no JSON result with its epochs' seconds", result.stderr)
    return figures


def _summarise(epoch_seconds: list[float], floor_s: float) -> dict[str, float]:
    """Median of the epochs after the first (the first epoch's excess is compile time: none when noise made it the
    faster), and its multiple of the floor."""
    steady = float(np.median(epoch_seconds[1:])) if len(epoch_seconds) > 1 else float(epoch_seconds[0])
    return {"epoch_s": steady, "first_epoch_extra_s": max(0.0, float(epoch_seconds[0]) - steady),
            "epochs_timed": len(epoch_seconds), "floor_multiple": steady / floor_s}


def _time_contenders(dataset: Dataset, data_dir: Path | None, epochs: int, results: dict[str, Any],
                     left_out: dict[str, Any]) -> None:
    """Our training path on each backend, then the reference scripts, each in its own process, one at a time: the
    figures each reported go into ``results`` by label, one that could not be timed into ``left_out``, with why."""
    folder = str(data_dir.resolve()) if data_dir else None  # the timing processes load the same files
    references = {"keras-tensorflow-script": ("keras_script.py", {"KERAS_BACKEND": "tensorflow"})}
    if find_spec("torch") is not None:
        references["pytorch-loop"] = ("torch_loop.py", {})
    else:
        left_out["pytorch-loop"] = {"why": "PyTorch is not installed"}
        # Into the Python that runs fmnist, not whichever pip is first on the PATH.
        log.warning("PyTorch is not installed, so the plain PyTorch loop is left out ('%s -m pip install torch "
                    "--index-url https://download.pytorch.org/whl/cpu' adds it, without CUDA's 2.5 GB)",
                    runs.shell_word(sys.executable))

    # Into ``results`` as they come, so that they are kept if the bench is stopped.
    def timed(label: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        try:
            results[label] = _run_json(label, cmd, epochs, env)
        except LeftOut as out:
            log.warning("%s; left out (the end of its stderr is in the report, under left_out)", out)
            left_out[label] = {"why": str(out), "stderr_tail": out.stderr_tail}

    with tempfile.TemporaryDirectory() as tmp:
        # The scripts' data, written first: a full disk is found before minutes of timing, not after.
        npz = Path(tmp) / "train.npz"
        np.savez(npz, x_train=dataset.x_train, y_train=dataset.y_train)
        for backend in BACKENDS:
            log.info("timing our training path on %s (%d epochs)", backend, epochs)
            timed(f"fmnist-{backend}", [sys.executable, "-c", f"import json; from fmnist.bench import worker; "
                                        f"print(json.dumps(worker({backend!r}, {epochs}, {folder!r})))"])
        for label, (script, env) in references.items():
            log.info("timing the reference %s (%d epochs)", label, epochs)
            timed(label, [sys.executable, str(REFERENCE_DIR / script), str(npz), str(epochs)],
                  env={"TF_CPP_MIN_LOG_LEVEL": "2", **env})


def bench(output: Path, quick: bool = False, data_dir: Path | None = None) -> dict[str, Any]:
    """Measure everything in one run on this machine; write JSON (and a chart beside it) and return it."""
    output = runs.prepare_output(output, "--output", ".json")
    chart = output.with_suffix(".png")
    if chart.is_dir():  # found now, not after minutes of timing
        raise FmnistError(f"the chart goes beside --output as {chart}, but a folder is there: move it, or choose "
                          "another --output")
    runs.refuse_foreign_file(chart, f"the chart goes beside --output as {chart}, but", "choose another --output")
    epochs = 3 if quick else 6
    settings = TrainSettings()
    forward_flops, train_flops = dense_flops_per_image(settings.hidden_sizes)
    dataset = load_dataset(data_dir)  # refused, if it must be, before any timing
    validation_images = round(len(dataset.y_train) * settings.validation_fraction)
    train_images = len(dataset.y_train) - validation_images
    # An epoch's time, as every contender takes it, includes its validation pass.
    epoch_flops = train_flops * train_images + forward_flops * validation_images
    gflops = gemm_gflops()
    epoch_floor_s = epoch_flops / (gflops * 1e9)
    log.info("GEMM %.1f GFLOP/s; an epoch's FLOP floor is %.2fs", gflops, epoch_floor_s)
    from fmnist.train import VALIDATION_BATCH_SIZE

    matmul_s = epoch_matmul_seconds(settings.hidden_sizes, settings.batch_size, train_images, VALIDATION_BATCH_SIZE,
                                    validation_images)
    log.info("NumPy takes %.2fs for the epoch's matrix products alone, each at its own shape", matmul_s)

    results: dict[str, Any] = {}
    left_out: dict[str, Any] = {}
    report = {
        "machine": {"cpu_count": os.cpu_count(), "processor": _cpu_name(), "python": platform.python_version()},
        "gemm_gflops": gflops,
        "flops_per_image": {"forward": forward_flops, "train": train_flops},
        "epoch_flops": epoch_flops,
        "epoch_flop_floor_s": epoch_floor_s,
        "epoch_matmul_s": matmul_s,
        "train_images_per_epoch": train_images,
        "validation_images_per_epoch": validation_images,
        "batch_size": settings.batch_size,
        "quick": quick,
        "results": results,
        "left_out": left_out,
    }
    # Measured this far, if the bench stops short: beside --output, which keeps an earlier bench's complete figures.
    partial = output.with_name(f"{output.stem}.partial.json")
    try:
        _time_contenders(dataset, data_dir, epochs, results, left_out)
    except KeyboardInterrupt:
        if results:
            _score(results, epoch_floor_s, matmul_s, gflops, forward_flops)
            artifacts.write_json(partial, {**report, "stopped": True})
            log.warning("stopped: what was measured before is in %s", partial)
        raise
    _score(results, epoch_floor_s, matmul_s, gflops, forward_flops)
    if not any(label.startswith("fmnist-") for label in results):
        artifacts.write_json(partial, report)  # what was measured, the references' epochs say
        raise FmnistError(f"fmnist's own training could not be timed on any backend (the warnings above say why); "
                          f"what was measured is in {partial}")
    default = results.get(f"fmnist-{PREFERRED_BACKEND['dense']}")
    for label in ("keras-tensorflow-script", "pytorch-loop"):
        if default and label in results:
            report[f"default_vs_{label}"] = default["epoch_s"] / results[label]["epoch_s"]
    # The chart is drawn under a name of its own and takes its place only once the figures are written: a JSON that
    # cannot be written leaves an earlier bench's figures and chart together, not this chart beside those figures.
    drawn = artifacts.temporary_beside(chart)
    try:
        try:  # a chart that cannot be drawn loses no figure
            _chart(report, drawn)
            report["chart"] = str(chart)
        except Exception as exc:  # matplotlib's or the disk's: the figures matter more
            log.warning("the chart %s could not be drawn (%s); the figures are in %s", chart, first_line(exc), output)
        replaced = output.exists()
        artifacts.write_json(output, report)
        if "chart" in report:
            os.replace(drawn, chart)
        else:  # nor stays from an earlier bench beside them
            chart.unlink(missing_ok=True)
    finally:
        drawn.unlink(missing_ok=True)
    if replaced:
        log.info("%s held an earlier bench: replaced by this one", output)
    partial.unlink(missing_ok=True)  # an earlier bench's, stopped short: this one is complete
    return report


def _score(results: dict[str, Any], epoch_floor_s: float, matmul_s: float, gflops: float,
           forward_flops: float) -> None:
    """Add to each contender's figures its median epoch, its multiples of the floor and of the epoch's matrix
    products alone and, for our path, the share of the inference floor its throughput reaches."""
    for figures in results.values():
        figures.update(_summarise(figures["epoch_seconds"], epoch_floor_s))
        figures["matmul_multiple"] = figures["epoch_s"] / matmul_s
        if "inference_images_per_s" in figures:  # our path's, not the reference scripts'
            figures["inference_floor_fraction"] = {
                b: ips * forward_flops / (gflops * 1e9) for b, ips in figures["inference_images_per_s"].items()
            }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _chart(report: dict[str, Any], path: Path) -> None:
    """The report's epochs as bars, beside the matrix products alone and the FLOP floor, on the machine named."""
    from fmnist.plots import bar_chart_png

    labels = list(report["results"]) + ["matrix products alone", "FLOP floor"]
    values = [r["epoch_s"] for r in report["results"].values()] + [report["epoch_matmul_s"],
                                                                   report["epoch_flop_floor_s"]]
    machine = report["machine"]
    title = (f"seconds per training epoch of {report['train_images_per_epoch']:,} images, batch "
             f"{report['batch_size']} (lower is better)\nand of validating {report['validation_images_per_epoch']:,}; "
             f"{machine['cpu_count']} cores of {machine['processor']},\nwhose GEMM at {report['gemm_gflops']:.1f} "
             "GFLOP/s gives the FLOP floor")
    bar_chart_png(labels, values, title, path, references=2,
                  xlabel="seconds: median of the epochs after the first (compile)")


def table(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    lines = [
        f"machine: {report['machine']['processor']} ({report['machine']['cpu_count']} cores); "
        f"GEMM {report['gemm_gflops']:.1f} GFLOP/s; epoch FLOP floor {report['epoch_flop_floor_s']:.2f}s; "
        f"the epoch's matrix products (matmuls) alone, NumPy at their own shapes, {report['epoch_matmul_s']:.2f}s",
        f"{'path':<26}{'epoch s':>9}{'x floor':>9}{'x matmuls':>11}{'compile s':>11}{'peak MiB':>10}",
    ]
    for label, r in report["results"].items():
        rss = f"{r['peak_training_rss_mib']:.0f}" if "peak_training_rss_mib" in r else "-"
        lines.append(f"{label:<26}{r['epoch_s']:>9.2f}{r['floor_multiple']:>9.2f}{r['matmul_multiple']:>11.2f}"
                     f"{r['first_epoch_extra_s']:>11.2f}{rss:>10}")
    for label, r in report["results"].items():
        if "inference_images_per_s" in r:
            rates = ", ".join(f"batch {b}: {v:,.0f}/s ({report_frac:.0%} of floor)" for (b, v), report_frac in
                              zip(r["inference_images_per_s"].items(), r["inference_floor_fraction"].values()))
            lat = r["single_image_ms"]
            lines.append(f"{label} inference: {rates}; one image p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms")
    for label, why in report.get("left_out", {}).items():
        lines.append(f"left out: {label} ({why['why']})")
    for key, value in report.items():
        if key.startswith("default_vs_"):
            lines.append(f"default epoch / {key[len('default_vs_'):]} epoch: {value:.2f}")
    return "\n".join(lines)
