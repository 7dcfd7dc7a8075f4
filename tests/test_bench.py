import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_cli
from fmnist import artifacts, plots
from fmnist.errors import FmnistError
from fmnist.bench import (REFERENCE_DIR, _chart, _summarise, bench, dense_flops_per_image, epoch_matmul_seconds,
                          gemm_gflops, gemm_seconds, matrix_products, table)


def test_flops_of_the_spec_model_by_hand():
    forward, train = dense_flops_per_image((512, 256, 64, 32))
    macs = 784 * 512 + 512 * 256 + 256 * 64 + 64 * 32 + 32 * 10
    assert forward == 2 * macs == 1_102_464
    # Backward costs twice the forward, less the gradient of the pixels (784 x 512 multiply-adds), which no one needs.
    assert train == 3 * forward - 2 * 784 * 512 == 2_504_576


@pytest.mark.parametrize("hidden_sizes", [(512, 256, 64, 32), (16,)])
def test_the_matrix_products_timed_are_the_flops_counted(hidden_sizes):
    forward, backward = matrix_products(hidden_sizes, batch=64)
    forward_flops, train_flops = dense_flops_per_image(hidden_sizes)
    assert sum(2 * m * k * n for m, k, n in forward) == 64 * forward_flops
    assert sum(2 * m * k * n for m, k, n in forward + backward) == 64 * train_flops
    assert forward[0] == (64, 784, hidden_sizes[0]) and forward[-1] == (64, hidden_sizes[-1], 10)


def test_the_backward_products_are_the_gradients_shapes():
    # Weights' gradients are inputs' transposes by the outputs' gradients; an input's gradient, the output's gradient
    # by the weights' transpose: none for the pixels.
    assert matrix_products((16,), batch=8) == ([(8, 784, 16), (8, 16, 10)], [(784, 8, 16), (16, 8, 10), (8, 10, 16)])


def test_an_epoch_s_products_are_its_batches_and_its_last_smaller_batch(monkeypatch):
    import fmnist.bench as bench

    # A machine taking a microsecond to start a product and a picosecond a multiply-add: a small batch costs more
    # than its share.
    monkeypatch.setattr(bench, "gemm_seconds", lambda m, k, n: 1e-6 + m * k * n * 1e-12)

    def seconds(batch, training):
        forward, backward = matrix_products((16,), batch)
        return sum(1e-6 + m * k * n * 1e-12 for m, k, n in (forward + backward if training else forward))

    # 100 images in batches of 64, 50 to validate in batches of 32: a 36 and an 18 at the end.
    expected = seconds(64, True) + seconds(36, True) + seconds(32, False) + seconds(18, False)
    assert epoch_matmul_seconds((16,), 64, 100, 32, 50) == pytest.approx(expected)
    assert epoch_matmul_seconds((16,), 64, 128, 32, 0) == pytest.approx(2 * seconds(64, True))


def _fake_clock(monkeypatch, durations):
    """fmnist.bench's clock, read in pairs (a timing's start and end) ``durations`` apart: its arithmetic checked
    against known times, not the machine's speed. A reading past the last is an error."""
    import fmnist.bench as bench

    readings = iter([reading for duration in durations for reading in (0.0, duration)])
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(readings)))


def test_a_products_seconds_are_its_best_timing_of_enough_calls_over_their_number(monkeypatch):
    # 1, 2 and 4 calls take under 5 ms, 8 take 8 ms: then three timings of 8 calls, the best 8 ms.
    _fake_clock(monkeypatch, [0.001, 0.002, 0.004, 0.008, 0.009, 0.008, 0.012])
    assert gemm_seconds(64, 784, 512, repeats=3) == 0.008 / 8


def test_summary_drops_the_compiling_first_epoch():
    s = _summarise([9.0, 2.0, 2.2, 1.8], floor_s=1.6)
    assert s["epoch_s"] == 2.0 and s["first_epoch_extra_s"] == 7.0 and s["epochs_timed"] == 4
    assert s["floor_multiple"] == pytest.approx(1.25)
    noisy = _summarise([1.9, 2.0, 2.2], floor_s=1.6)  # a first epoch faster than the median: no compile time to show
    assert noisy["epoch_s"] == 2.1 and noisy["first_epoch_extra_s"] == 0.0


def test_gemm_throughput_is_two_flops_a_multiply_add_over_the_best_timing(monkeypatch):
    _fake_clock(monkeypatch, [0.5, 0.25, 0.4])
    assert gemm_gflops(size=256, repeats=3) == 2 * 256**3 / 0.25 / 1e9


def test_the_pytorch_loop_compiles_where_torch_is_not_installed(tmp_path):
    # The optional extra is left out of CI (2.5 GB): this much of its script is checked everywhere.
    import py_compile

    py_compile.compile(str(REFERENCE_DIR / "torch_loop.py"), cfile=str(tmp_path / "torch_loop.pyc"), doraise=True)


@pytest.mark.parametrize("script, env", [("keras_script.py", {"KERAS_BACKEND": "tensorflow"})])
def test_reference_script_runs_on_tiny_data(tmp_path, script, env):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (200, 28, 28), dtype=np.uint8), y_train=np.arange(200) % 10)
    result = subprocess.run([sys.executable, str(REFERENCE_DIR / script), str(npz), "2"],
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout.splitlines()[-1])["epoch_seconds"]) == 2


def test_table_renders_every_path():
    result = {"epoch_s": 2.0, "floor_multiple": 1.25, "matmul_multiple": 1.73, "first_epoch_extra_s": 3.0,
              "peak_training_rss_mib": 900,
              "inference_images_per_s": {"1": 5000.0}, "inference_floor_fraction": {"1": 0.05},
              "single_image_ms": {"p50": 0.2, "p99": 0.4}}
    report = {"machine": {"processor": "cpu", "cpu_count": 2}, "gemm_gflops": 100.0, "epoch_flop_floor_s": 1.6,
              "epoch_matmul_s": 1.25,
              "results": {"fmnist-jax": result, "keras-tensorflow-script": {**result, "epoch_s": 4.5}},
              "left_out": {"pytorch-loop": {"why": "PyTorch is not installed"}},
              "default_vs_keras-tensorflow-script": 0.44}
    text = table(report)
    assert "fmnist-jax" in text and "keras-tensorflow-script" in text and "0.44" in text and "p50 0.200 ms" in text
    assert "matrix products (matmuls) alone, NumPy at their own shapes, 1.25s" in text
    assert re.search(r"fmnist-jax +2\.00 +1\.25 +1\.73 +3\.00 +900", text)
    assert "left out: pytorch-loop (PyTorch is not installed)" in text


def test_a_bad_output_is_one_line_before_any_timing(tmp_path):
    result = run_cli("bench", "--quick", "--output", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"fmnist: error: --output {tmp_path} is a folder: name a file in it"]
    chart_name = run_cli("bench", "--quick", "--output", str(tmp_path / "bench.png"))  # the chart would replace it
    assert chart_name.returncode == 1 and "it is written as JSON; name it bench.json" in chart_name.stderr
    (tmp_path / "bench.png").mkdir()
    with pytest.raises(FmnistError, match="the chart goes beside --output as .*bench.png, but a folder is there"):
        bench(tmp_path / "bench.json", quick=True)
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]


def _earlier_bench(folder):
    """An earlier bench's figures and chart in ``folder``, as fmnist wrote them: their bytes by name."""
    plots.bar_chart_png(["an earlier bench's"], [1.0], "t", folder / "bench.png")
    artifacts.write_json(folder / "bench.json", {"results": "an earlier bench's", "machine": {}, "gemm_gflops": 1})
    return {name: (folder / name).read_bytes() for name in ("bench.png", "bench.json")}


def test_a_users_picture_where_the_chart_goes_is_refused_before_the_timing(tmp_path):
    (tmp_path / "mine.png").write_bytes(b"\x89PNG not fmnist's")
    with pytest.raises(FmnistError, match=f"^the chart goes beside --output as {tmp_path / 'mine.png'}, but a picture "
                                          r"that fmnist did not draw is there \(an older fmnist's are not known as "
                                          r"its own\); move it, or choose another --output$"):
        bench(tmp_path / "mine.json", quick=True, data_dir=tmp_path / "no data needed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.png"]


@pytest.mark.realdata
def test_every_contender_reads_the_given_data_and_no_figures_of_our_own_is_a_failure(tmp_path, monkeypatch,
                                                                                      real_data_dir, caplog):
    import fmnist.bench as bench

    commands = []

    def failed(label, cmd, epochs, env=None):  # each one
        commands.append(cmd)
        raise bench.LeftOut(f"{label} failed (exit 1): broken", "Traceback (most recent call last):\nbroken\n")

    monkeypatch.setattr(bench, "_run_json", failed)
    monkeypatch.setattr(bench, "find_spec", lambda name: None)  # as in CI: no PyTorch
    earlier = _earlier_bench(tmp_path)
    with (caplog.at_level(logging.WARNING, logger="fmnist.bench"),
          pytest.raises(FmnistError, match=r"fmnist's own training could not be timed on any backend \(the "
                                           r"warnings above say why\); what was measured is in "
                                           f"{re.escape(str(tmp_path / 'bench.partial.json'))}")):
        bench.bench(tmp_path / "bench.json", quick=True, data_dir=real_data_dir)
    assert {name: (tmp_path / name).read_bytes() for name in earlier} == earlier  # a complete bench, kept whole
    assert (f"PyTorch is not installed, so the plain PyTorch loop is left out ('{sys.executable} -m pip install "
            "torch --index-url https://download.pytorch.org/whl/cpu' adds it") in caplog.text
    assert not any(cmd[1].endswith("torch_loop.py") for cmd in commands)
    kept = json.loads((tmp_path / "bench.partial.json").read_text())  # what was measured, kept
    assert kept["results"] == {} and kept["validation_images_per_epoch"] == 12000
    assert kept["left_out"] == {  # and why each contender is missing
        "pytorch-loop": {"why": "PyTorch is not installed"},
        **{label: {"why": f"{label} failed (exit 1): broken",
                   "stderr_tail": ["Traceback (most recent call last):", "broken"]}
           for label in ("fmnist-jax", "fmnist-tensorflow", "keras-tensorflow-script")}}
    assert "fmnist-jax failed (exit 1): broken; left out (the end of its stderr is in the report" in caplog.text
    # Every timed epoch validates too: its floor counts 48,000 images trained and 12,000 forward.
    assert kept["epoch_flops"] == 48000 * 2_504_576 + 12000 * 1_102_464
    assert math.isfinite(kept["epoch_matmul_s"]) and kept["epoch_matmul_s"] > 0  # timed, not how fast: bench's job
    workers = [cmd for cmd in commands if "worker(" in cmd[-1]]
    assert len(workers) == 2 and all(repr(str(real_data_dir.resolve())) in cmd[-1] for cmd in workers)
    assert any(cmd[1].endswith("keras_script.py") for cmd in commands)


def test_a_contender_that_fails_prints_nothing_or_hangs_is_left_out_with_why(monkeypatch):
    import fmnist.bench as bench

    monkeypatch.setattr(bench, "CONTENDER_TIMEOUT_S_PER_EPOCH", 1)
    ok = [sys.executable, "-c", "print('log line'); print('{\"epoch_seconds\": [1.0]}')"]
    assert bench._run_json("ok", ok, 2) == {"epoch_seconds": [1.0]}
    for script, said in [("pass", "contender printed no JSON result"),
                         ("print('not json')", "contender printed no JSON result"),
                         ("print('[]')", "contender printed no JSON result"),
                         ("print('{\"epoch_seconds\": []}')", "contender printed no JSON result"),
                         ("print('{\"epoch_seconds\": [\"1\"]}')", "contender printed no JSON result"),
                         ("import sys; sys.exit('broken')", "contender failed (exit 1): broken"),
                         ("import os; os.kill(os.getpid(), 9)", "contender failed (killed by signal 9)"),
                         ("import time; time.sleep(30)", "contender took over 2 s")]:
        with pytest.raises(bench.LeftOut, match=re.escape(said)):  # 1 s an epoch, 2 epochs
            bench._run_json("contender", [sys.executable, "-c", script], 2)
    # What it wrote to stderr, to its end, up to a traceback's last lines: the error and where it came from.
    script = ("import sys; print('\\n'.join(f'line {i}' for i in range(50)), file=sys.stderr); "
              "raise RuntimeError('the runtime gave up')")
    with pytest.raises(bench.LeftOut, match="contender failed \\(exit 1\\): RuntimeError: the runtime gave up") as out:
        bench._run_json("contender", [sys.executable, "-c", script], 2)
    tail = out.value.stderr_tail
    assert len(tail) == bench.STDERR_TAIL_LINES and tail[-1] == "RuntimeError: the runtime gave up"
    assert "Traceback (most recent call last):" in tail and tail[0].startswith("line ")


def test_the_epoch_clock_counts_the_callbacks_after_the_history_s_seconds(tmp_path):
    import keras

    from fmnist.bench import epoch_clock

    class SlowSave(keras.callbacks.Callback):  # as the backup's save, after the history took the epoch's seconds
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.3)

    clock = epoch_clock()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((10, 4)), rng.integers(0, 2, 10), epochs=3, verbose=0, callbacks=[SlowSave(), clock])
    assert len(clock.seconds) == 3 and all(s >= 0.3 for s in clock.seconds)


def test_a_timing_process_dies_with_a_bench_killed_outright(tmp_path):
    # SIGKILL leaves the bench no moment to stop its timing process: the kernel must, or it keeps the cores busy.
    pid_file = tmp_path / "timing.pid"
    timing = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    bench_process = subprocess.Popen([sys.executable, "-c", f"from fmnist.bench import _run_json; "
                                      f"_run_json('timing', [{sys.executable!r}, '-c', {timing!r}], 1)"])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        timing_pid = int(pid_file.read_text())
        bench_process.kill()
        bench_process.wait()
        deadline = time.monotonic() + 10
        while _alive(timing_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(timing_pid)
    finally:
        bench_process.kill()
        if pid_file.is_file() and _alive(int(pid_file.read_text())):  # failed: leave nothing behind
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid):
    try:  # a dead child of a dead parent is reaped by init; until then it is a zombie, not running
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.realdata
def test_a_chart_that_cannot_be_drawn_loses_no_figure_nor_stays_from_an_earlier_bench(tmp_path, monkeypatch,
                                                                                       real_data_dir, caplog, capsys):
    import fmnist.bench as bench
    from fmnist.cli import main

    figures = {"epoch_seconds": [3.0, 2.0, 2.0], "peak_training_rss_mib": 900.0,
               "inference_images_per_s": {"1": 10.0}, "single_image_ms": {"p50": 0.2, "p99": 0.4}}
    monkeypatch.setattr(bench, "_time_contenders",
                        lambda dataset, data_dir, epochs, results, _: results.update({"fmnist-jax": dict(figures)}))

    def full_disk(report, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench, "_chart", full_disk)
    _earlier_bench(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fmnist.bench"):
        status = main(["bench", "--quick", "--output", str(tmp_path / "bench.json"), "--data-dir", str(real_data_dir)])
    out = capsys.readouterr().out
    assert status == 0 and "fmnist-jax" in out  # the table, with what was measured
    assert out.rstrip().endswith(f"written: {tmp_path / 'bench.json'} (no chart: the warning above says why)")
    kept = json.loads((tmp_path / "bench.json").read_text())
    assert kept["results"]["fmnist-jax"]["epoch_s"] == 2.0 and "chart" not in kept
    assert not (tmp_path / "bench.png").exists()
    assert "could not be drawn ([Errno 28] No space left on device)" in caplog.text


@pytest.mark.realdata
def test_a_bench_stopped_keeps_what_it_measured_beside_an_earlier_complete_one(tmp_path, monkeypatch, real_data_dir,
                                                                               caplog):
    import fmnist.bench as bench

    figures = {"epoch_seconds": [3.0, 2.0, 2.0], "peak_training_rss_mib": 900.0,
               "inference_images_per_s": {"1": 10.0}, "single_image_ms": {"p50": 0.2, "p99": 0.4}}

    def stopped_at_the_second(label, cmd, epochs, env=None):  # Ctrl-C (or kill) while the second one is timed
        if label == "fmnist-jax":
            return dict(figures)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_run_json", stopped_at_the_second)
    earlier = _earlier_bench(tmp_path)["bench.json"]
    with caplog.at_level(logging.WARNING, logger="fmnist.bench"), pytest.raises(KeyboardInterrupt):
        bench.bench(tmp_path / "bench.json", quick=True, data_dir=real_data_dir)
    assert f"stopped: what was measured before is in {tmp_path / 'bench.partial.json'}" in caplog.text
    kept = json.loads((tmp_path / "bench.partial.json").read_text())
    assert kept["stopped"] is True and list(kept["results"]) == ["fmnist-jax"]
    assert kept["results"]["fmnist-jax"]["epoch_s"] == 2.0 and kept["gemm_gflops"] > 0
    assert (tmp_path / "bench.json").read_bytes() == earlier
    # A complete bench then takes the place of both.
    monkeypatch.setattr(bench, "_run_json", lambda label, cmd, epochs, env=None: dict(figures))
    bench.bench(tmp_path / "bench.json", quick=True, data_dir=real_data_dir)
    assert not (tmp_path / "bench.partial.json").exists()
    assert set(json.loads((tmp_path / "bench.json").read_text())["results"]) >= {"fmnist-jax", "fmnist-tensorflow"}


@pytest.mark.realdata
def test_figures_that_cannot_be_written_leave_the_earlier_bench_whole(tmp_path, monkeypatch, real_data_dir, caplog,
                                                                      capsys, full_disk_for):
    import fmnist.bench as bench
    from fmnist.cli import main

    figures = {"epoch_seconds": [3.0, 2.0, 2.0], "peak_training_rss_mib": 900.0,
               "inference_images_per_s": {"1": 10.0}, "single_image_ms": {"p50": 0.2, "p99": 0.4}}
    monkeypatch.setattr(bench, "_time_contenders",
                        lambda dataset, data_dir, epochs, results, _: results.update({"fmnist-jax": dict(figures)}))
    earlier = _earlier_bench(tmp_path)
    command = ["bench", "--quick", "--output", str(tmp_path / "bench.json"), "--data-dir", str(real_data_dir)]
    with monkeypatch.context() as full:
        full.setattr(bench.artifacts, "write_json", bench.artifacts.write_json)  # undone with the context
        full_disk_for("bench.json")
        assert main(command) == 1
        full.setattr(bench, "_chart", lambda report, path: 1 / 0)  # and with no chart of its own either
        assert main(command) == 1
    assert capsys.readouterr().err.count("No space left on device") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(earlier)  # no new chart, beside or in its place
    assert {name: (tmp_path / name).read_bytes() for name in earlier} == earlier
    with caplog.at_level(logging.INFO, logger="fmnist.bench"):  # with room again: both replaced, and said so
        assert main(command) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["chart"] == str(tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(earlier)
    assert f"{tmp_path / 'bench.json'} held an earlier bench: replaced by this one" in caplog.text


def test_a_timing_process_reports_its_own_peak_memory_not_its_parents():
    from fmnist.bench import _peak_rss_mib

    held_mib = 200
    held = np.ones(held_mib * 2**20 // 8)  # resident in this process, the timing processes' parent
    child = subprocess.run([sys.executable, "-c", "from fmnist.bench import _peak_rss_mib; print(_peak_rss_mib())"],
                           capture_output=True, text=True, timeout=120, check=True)
    parents_peak = _peak_rss_mib()
    # The child imports less than this process did before it took the array: its own peak is below the parent's
    # without the array, where a peak carried over from the parent would be the parent's whole.
    assert parents_peak >= held_mib and float(child.stdout) < parents_peak - held_mib, (child.stdout, parents_peak,
                                                                                        held.sum())


@pytest.mark.realdata
def test_the_worker_times_our_training_and_inference_for_real(real_data_dir):
    from fmnist.bench import INFERENCE_BATCHES, worker

    figures = worker("jax", 1, str(real_data_dir))
    assert len(figures["epoch_seconds"]) == 1 and figures["epoch_seconds"][0] > 0
    assert list(figures["inference_images_per_s"]) == [str(b) for b in INFERENCE_BATCHES]
    assert all(rate > 0 for rate in figures["inference_images_per_s"].values())
    assert 0 < figures["single_image_ms"]["p50"] <= figures["single_image_ms"]["p99"]
    assert figures["peak_training_rss_mib"] > 100  # the data and the model at least


def test_the_chart_says_what_an_epoch_holds_and_on_what_machine(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, trim=False: drawn.append(fig))
    report = {"results": {"fmnist-jax": {"epoch_s": 2.0}}, "epoch_matmul_s": 0.7, "epoch_flop_floor_s": 0.5,
              "train_images_per_epoch": 48000, "validation_images_per_epoch": 12000, "batch_size": 64,
              "gemm_gflops": 262.7, "machine": {"cpu_count": 2, "processor": "Intel(R) Xeon(R) Processor"}}
    _chart(report, tmp_path / "bench.png")
    assert drawn.pop().axes[0].get_title() == (
        "seconds per training epoch of 48,000 images, batch 64 (lower is better)\nand of validating 12,000; 2 cores "
        "of Intel(R) Xeon(R) Processor,\nwhose GEMM at 262.7 GFLOP/s gives the FLOP floor")
