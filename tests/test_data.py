import contextlib
import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import time
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from conftest import AS_ANOTHER_USER, idx_bytes, run_cli, write_idx_set
from fmnist import artifacts, data
from fmnist.errors import FmnistError


def test_loads_tiny_gz_and_raw_files_identically(tmp_path):
    sums_gz = write_idx_set(tmp_path / "gz", gz=True)
    sums_raw = write_idx_set(tmp_path / "raw", gz=False)
    assert sums_gz == sums_raw
    a = data.load_dataset(tmp_path / "gz", checksums=sums_gz)
    b = data.load_dataset(tmp_path / "raw", checksums=sums_raw)
    assert a.x_train.shape == (60, 28, 28) and a.y_test.shape == (20,)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.source.startswith("data dir")


def test_features_are_flat_float32_in_unit_range():
    ramp = np.arange(784).reshape(28, 28) % 256  # every grey, each pixel its own place in row-major order
    images = np.stack([ramp, ramp[::-1]]).astype(np.uint8)
    features = data.to_features(images)
    assert features.shape == (2, 784) and features.dtype == np.float32
    assert features.min() == 0.0 and features.max() == 1.0
    np.testing.assert_allclose(features[1, :28], [(27 * 28 + col) % 256 / 255 for col in range(28)], rtol=1e-6)
    np.testing.assert_allclose(features, images.reshape(2, 784) / 255, rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[:-5], "truncated or padded"),
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "not an IDX images file"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "SHA-256"),
])
def test_damaged_image_file_is_refused_with_its_name(tiny_data, mutate, message):
    folder, sums = tiny_data
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(mutate(gzip.decompress(path.read_bytes()))))
    with pytest.raises(FmnistError, match=message) as info:
        data.load_dataset(folder, checksums=sums)
    assert "train-images-idx3-ubyte" in str(info.value) and "dataset-fashion-mnist" in str(info.value)  # its advice


def test_wrong_image_size_is_refused(tmp_path):
    sums = write_idx_set(tmp_path)
    raw = idx_bytes(np.zeros((60, 14, 56), dtype=np.uint8))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(FmnistError, match="14x56 images, expected 28x28"):
        data.load_dataset(tmp_path, checksums=sums)


@pytest.mark.parametrize("content, refusal", [
    (b"this is not gzip", r"t10k-labels-idx1-ubyte.gz is neither gzip data, as its name says, nor an IDX labels file "
                          r"saved decompressed \(it begins b'this is '\)"),
    (gzip.compress(b"x" * 1000, mtime=0)[:10] + b"\xff" * 50, "cannot be decompressed"),  # a damaged deflate stream
], ids=["not-gzip", "damaged-deflate"])
def test_not_gzip_is_refused(tiny_data, content, refusal):
    folder, sums = tiny_data
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(content)
    with pytest.raises(FmnistError, match=refusal):
        data.load_dataset(folder, checksums=sums)


@pytest.mark.parametrize("gz", [True, False], ids=["gz-of-zeros", "raw"])
def test_a_file_far_larger_than_any_of_the_four_is_refused_before_it_fills_the_memory(tiny_data, gz):
    folder, sums = tiny_data
    path = folder / "train-images-idx3-ubyte.gz"
    if gz:  # 65 KiB that decompress to 65 MiB
        path.write_bytes(gzip.compress(bytes(data.MAX_IDX_BYTES + 1), compresslevel=1))
    else:  # sparse: nothing is written, only its size is set
        with open(path, "wb") as sparse:
            sparse.truncate(10 * 2**30)
    with pytest.raises(FmnistError, match=f"^{path} is over 64 MiB{' decompressed' if gz else ''}, far more than "
                                          "any Fashion-MNIST file; "):
        data.load_dataset(folder, checksums=sums)


def test_a_gz_file_a_browser_saved_decompressed_is_read_by_its_bytes(tmp_path):
    sums = write_idx_set(tmp_path / "raw", gz=False)
    (tmp_path / "named-gz").mkdir()
    for raw in (tmp_path / "raw").iterdir():  # the .gz name kept, the bytes decompressed
        (tmp_path / "named-gz" / f"{raw.name}.gz").write_bytes(raw.read_bytes())
    loaded = data.load_dataset(tmp_path / "named-gz", checksums=sums)
    np.testing.assert_array_equal(loaded.x_test, data.load_dataset(tmp_path / "raw", checksums=sums).x_test)


def test_a_damaged_debian_file_is_named_with_the_reinstall(tmp_path, monkeypatch):
    sums = write_idx_set(tmp_path / "debian")
    cut = tmp_path / "debian" / "t10k-labels-idx1-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:20])
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")  # as if /usr/share/datasets/fashion-mnist
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras"))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    with pytest.raises(FmnistError, match="reinstall it: sudo apt-get install --reinstall dataset-fashion-mnist$"):
        data.load_dataset(checksums=sums)
    assert len(cut.read_bytes()) == 20  # a package's file: never removed


def test_missing_file_is_named(tiny_data, monkeypatch, tmp_path):
    folder, sums = tiny_data
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "not-installed")
    with pytest.raises(FmnistError, match=r"lacks t10k-images-idx3-ubyte \(.gz or raw\); get the data"):
        data.load_dataset(folder, checksums=sums)
    # With the package's files there, a folder given by mistake is what keeps them from use: said so.
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "package")
    write_idx_set(data.DEBIAN_DIR)
    with pytest.raises(FmnistError, match=r"lacks t10k-images-idx3-ubyte \(.gz or raw\); the Debian package "
                                          r"dataset-fashion-mnist is installed: leave out --data-dir to use its "
                                          r"files$"):
        data.load_dataset(folder, checksums=sums)
    monkeypatch.setenv("FMNIST_DATA_DIR", str(folder))
    with pytest.raises(FmnistError, match=r"is installed: unset FMNIST_DATA_DIR to use its files$"):
        data.load_dataset(checksums=sums)
    with pytest.raises(FmnistError, match=r"is installed: leave out --data-dir and unset FMNIST_DATA_DIR to use its "
                                          r"files$"):  # else the variable's folder would be used next
        data.load_dataset(folder, checksums=sums)
    monkeypatch.delenv("FMNIST_DATA_DIR")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b damaged")  # there, but not the dataset's file
    with pytest.raises(FmnistError, match=r"t10k-images-idx3-ubyte.gz .*; the Debian package dataset-fashion-mnist "
                                          r"is installed: leave out --data-dir to use its files$"):
        data.load_dataset(folder, checksums=sums)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").mkdir()  # a folder, or a FIFO or a broken link, where the file should be
    with pytest.raises(FmnistError, match=r"lacks t10k-images-idx3-ubyte \(.gz or raw\) \(t10k-images-idx3-ubyte.gz "
                                          r"there, but not a readable file\)"):
        data.load_dataset(folder, checksums=sums)
    with pytest.raises(FmnistError, match=r"train-labels-idx1-ubyte.gz is not a folder: give the "
                                          "folder that holds the four IDX files"):
        data.load_dataset(folder / "train-labels-idx1-ubyte.gz", checksums=sums)


def test_scoring_needs_the_test_files_alone(tiny_data, monkeypatch):
    folder, sums = tiny_data
    full = data.load_dataset(folder, checksums=sums)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / name).unlink()
    with pytest.raises(FmnistError, match="lacks train-images-idx3-ubyte, train-labels-idx1-ubyte"):
        data.load_dataset(folder, checksums=sums)
    for attempt in ("verified", "cached"):
        test = data.load_dataset(folder, checksums=sums, test_only=True)
        np.testing.assert_array_equal(test.x_test, full.x_test)
        np.testing.assert_array_equal(test.y_test, full.y_test)
        assert test.x_train.shape == (0, 28, 28) and test.y_train.shape == (0,)
        assert set(test.checksums) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
        monkeypatch.setattr(data, "_read_verified", lambda *a: pytest.fail("the cache is not used"))
    with pytest.raises(FmnistError, match="give the folder that holds the test set's two IDX files"):
        data.load_dataset(folder / "nowhere", checksums=sums, test_only=True)


def test_cache_serves_second_load_and_notices_a_changed_source(tiny_data, monkeypatch):
    folder, sums = tiny_data
    first = data.load_dataset(folder, checksums=sums)
    manifests = list(data.cache_dir().glob(f"*/{artifacts.DATA_MANIFEST}"))
    assert len(manifests) == 1
    calls = []
    monkeypatch.setattr(data, "_read_verified", lambda *a: calls.append(a) or pytest.fail("cache not used"))
    second = data.load_dataset(folder, checksums=sums)
    np.testing.assert_array_equal(first.x_test, second.x_test)
    # Read-only either way: a caller writing into the arrays is told so from the cache as from the files.
    for loaded in (first, second):
        assert not any(array.flags.writeable for array in (loaded.x_train, loaded.y_train, loaded.x_test,
                                                             loaded.y_test))
    monkeypatch.undo()
    # A replaced source file (new bytes and mtime, the same valid IDX shape) must be verified again, not served from
    # the cache: only its SHA-256 tells it apart.
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(60, np.uint8))))
    with pytest.raises(FmnistError, match="train-labels-idx1-ubyte.gz has SHA-256 [0-9a-f]{64}, expected"):
        data.load_dataset(folder, checksums=sums)


@pytest.mark.parametrize("damage", ["cut", "changed"])
def test_a_cached_array_changed_since_it_was_verified_is_read_from_the_source_again(tiny_data, damage, caplog):
    folder, sums = tiny_data
    first = data.load_dataset(folder, checksums=sums)
    (cached,) = data.cache_dir().glob("*/y_test.npy")
    labels = np.load(cached)
    np.save(cached, labels[:5] if damage == "cut" else (labels + 1) % 10)  # the same shape, other labels
    second = data.load_dataset(folder, checksums=sums)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert "do not match their record; verifying the data files again" in caplog.text
    np.testing.assert_array_equal(np.load(cached), first.y_test)  # and the cache is whole again


def test_what_a_killed_cache_writer_left_is_removed_once_it_is_an_hour_old(tiny_data, monkeypatch, tmp_path):
    folder, sums = tiny_data
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "0123456789abcdef"
    entry.mkdir(parents=True)
    killed, writing = entry / ".x_train.k1ll.tmp.npy", entry / ".x_train.l1ve.tmp.npy"  # as write_atomic names them
    for leftover in (killed, writing):
        leftover.write_bytes(b"\0" * 1000)
    os.utime(killed, (time.time() - 2 * data.STALE_AFTER_S,) * 2)
    data.load_dataset(folder, checksums=sums)  # verifies the files, and caches them
    assert not killed.exists() and writing.exists()  # another process's, maybe, still being written


def test_a_cache_entry_whose_files_changed_or_went_is_removed_when_another_is_saved(tiny_data, monkeypatch,
                                                                                     tmp_path):
    folder, sums = tiny_data
    cache = tmp_path / "cache"
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(cache))

    def entries() -> list[list[Path]]:  # each entry's source files
        return [[Path(source[0]) for source in json.loads((entry / artifacts.DATA_MANIFEST).read_text())[
            "sources"].values()] for entry in cache.iterdir()]

    def touch(path: Path) -> None:  # a new download of the same file, say
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))

    data.load_dataset(folder, checksums=sums, test_only=True)
    data.load_dataset(folder, checksums=sums)
    assert len(entries()) == 2  # both can still be served
    touch(folder / "train-labels-idx1-ubyte.gz")
    data.load_dataset(folder, checksums=sums)
    # The full load's new entry, and the test-only one, whose two files are as they were.
    assert sorted(len(sources) for sources in entries()) == [2, 4]
    moved = shutil.copytree(folder, tmp_path / "moved")
    data.load_dataset(moved, checksums=sums)
    shutil.rmtree(moved)
    touch(folder / "train-labels-idx1-ubyte.gz")
    data.load_dataset(folder, checksums=sums)
    assert sorted(len(sources) for sources in entries()) == [2, 4]  # the moved folder's entry gone too
    assert all(source.parent == folder.resolve() for sources in entries() for source in sources)


def test_an_emptied_cache_file_is_read_from_the_source_again(tiny_data):
    folder, sums = tiny_data
    first = data.load_dataset(folder, checksums=sums)
    (cached,) = data.cache_dir().glob("*/x_test.npy")
    cached.write_bytes(b"")  # a disk that filled up, say
    np.testing.assert_array_equal(data.load_dataset(folder, checksums=sums).x_test, first.x_test)
    np.testing.assert_array_equal(np.load(cached), first.x_test)


def test_env_var_and_keras_cache_are_searched(tmp_path, monkeypatch):
    sums = write_idx_set(tmp_path / "env")
    monkeypatch.setenv("FMNIST_DATA_DIR", "env")  # relative: named absolute, as --json names every path
    monkeypatch.chdir(tmp_path)
    assert data.locate(checksums=sums)[0] == f"data dir {tmp_path / 'env'}"
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("FMNIST_DATA_DIR", "../env")  # the way there taken out, not kept as "work/../env"
    assert data.locate(checksums=sums)[0] == f"data dir {(tmp_path / 'env').resolve()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FMNIST_DATA_DIR", "nowhere")  # named as where the folder came from: no --data-dir was given
    with pytest.raises(FmnistError, match=r"^nowhere \(FMNIST_DATA_DIR\) does not exist: give the folder"):
        data.locate(checksums=sums)
    with pytest.raises(FmnistError, match=r"^elsewhere does not exist"):  # --data-dir goes first, and is named so
        data.locate(Path("elsewhere"), checksums=sums)
    monkeypatch.delenv("FMNIST_DATA_DIR")
    write_idx_set(data.keras_cache_dir())
    assert data.locate(checksums=sums)[0].startswith("keras cache")
    shutil.copytree(data.keras_cache_dir(), tmp_path / "home" / "datasets" / "fashion-mnist")
    keras_home = os.environ["KERAS_HOME"]
    monkeypatch.setenv("KERAS_HOME", "home")  # relative, named absolute too
    assert data.locate(checksums=sums)[0] == f"keras cache {tmp_path / 'home' / 'datasets' / 'fashion-mnist'}"
    monkeypatch.setenv("KERAS_HOME", keras_home)
    # A keras cache in a home we may not enter (a container run as another user): Debian's files are found still,
    # and a --data-dir there is refused in one line. Its folder lets no one in, and is looked at as a user without
    # root's power to enter any folder (root runs CI).
    locked, debian, inside = data.keras_cache_dir().parent, tmp_path / "env", data.keras_cache_dir() / "x"
    found_by = ("import json, sys; from pathlib import Path; from fmnist import data; "
                "data.DEBIAN_DIR = Path(sys.argv[1]); print(data.locate(checksums=json.loads(sys.argv[2]))[0])")
    locked.chmod(0o000)
    try:
        found = subprocess.run([*AS_ANOTHER_USER, sys.executable, "-c", found_by, str(debian), json.dumps(sums)],
                               capture_output=True, text=True, timeout=120)
        refused = run_cli("data", "--data-dir", str(inside), as_another_user=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert found.stdout == f"Debian package dataset-fashion-mnist {debian}\n", found.stderr
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and refused.stderr.startswith(
        f"fmnist: error: {inside} cannot be looked at (Permission denied): give a folder you may read; "), \
        refused.stderr


@contextlib.contextmanager
def served_over_http(folder, monkeypatch):
    """``folder``'s files served on a local port, where fmnist downloads from (no Debian package to find first)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(data, "DEBIAN_DIR", folder.parent / "no-debian-package")
    monkeypatch.setenv("FMNIST_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield
    finally:
        server.shutdown()


def test_download_with_keras_get_file_from_a_local_server(tmp_path, monkeypatch, capsys):
    served = tmp_path / "served"
    sums = write_idx_set(served)
    killed = data.keras_cache_dir().parent / f"{data.DOWNLOAD_PREFIX}killed"  # a download killed outright left it
    (killed / "train-images-idx3-ubyte.gz").parent.mkdir(parents=True)
    (killed / "train-images-idx3-ubyte.gz").write_bytes(b"half")
    os.utime(killed, (time.time() - 2 * data.STALE_AFTER_S,) * 2)
    with served_over_http(served, monkeypatch):
        dataset = data.load_dataset(checksums=sums)
    assert not killed.exists()
    assert dataset.source.startswith("download")
    assert (data.keras_cache_dir() / "train-images-idx3-ubyte.gz").is_file()
    assert dataset.x_train.shape == (60, 28, 28)
    # keras' "Downloading data from" and progress bar: on stdout, they would come before `--json`'s result.
    printed = capsys.readouterr()
    assert printed.out == "" and "Downloading data from" in printed.err


def test_a_download_damaged_again_at_the_second_look_ends_in_one_line_with_advice(tmp_path, monkeypatch, caplog):
    served = tmp_path / "served"
    sums = write_idx_set(served)
    cut = served / "train-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:1000])  # what the server gives each time (a proxy's page would do the same)
    with served_over_http(served, monkeypatch), pytest.raises(FmnistError) as raised:
        data.load_dataset(checksums=sums)
    message = str(raised.value)
    assert "\n" not in message and "cannot be decompressed" in message
    assert message.endswith(f"removed from keras' cache, to be downloaded anew, at the second look too: another "
                            f"process may be changing the data files, or the download is not the dataset; "
                            f"{data.HOW_TO_GET}")
    assert caplog.text.count("looking for the data again") == 1
    assert not (data.keras_cache_dir() / cut.name).exists()  # not left there to fail the next run as well


def test_a_sound_file_in_keras_cache_is_kept_when_a_checksum_not_fashion_mnists_fails(tmp_path, monkeypatch):
    sums = write_idx_set(data.keras_cache_dir())
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian-package")
    wrong = {**sums, "t10k-images-idx3-ubyte": "0" * 64}  # as a run's config.json edited by hand records them
    with pytest.raises(FmnistError, match="has SHA-256 .* expected 0{64}"):
        data.load_dataset(checksums=wrong, test_only=True)
    assert data.load_dataset(checksums=sums, test_only=True).x_test.shape == (20, 28, 28)  # still there


def test_a_damaged_file_in_keras_cache_is_removed_and_fetched_anew(tmp_path, monkeypatch, caplog):
    served = tmp_path / "served"
    sums = write_idx_set(served)
    shutil.copytree(served, data.keras_cache_dir())
    cut = data.keras_cache_dir() / "train-images-idx3-ubyte.gz"
    # Cut short, as keras' own download leaves one it was killed in (it writes in place, and checks nothing).
    cut.write_bytes(cut.read_bytes()[:1000])
    with served_over_http(served, monkeypatch):
        dataset = data.load_dataset(checksums=sums)
    assert f"{cut} cannot be decompressed" in caplog.text
    assert "removed from keras' cache, to be downloaded anew" in caplog.text and "looking for the data again" in (
        caplog.text)
    assert cut.read_bytes() == (served / cut.name).read_bytes() and dataset.x_train.shape == (60, 28, 28)
    assert not list(cut.parent.parent.glob(".fmnist-download-*"))  # downloaded beside, then renamed in
    cut.write_bytes(cut.read_bytes()[:1000])
    with pytest.raises(FmnistError, match="cannot be decompressed"):  # the user's folder: left as it is
        data.load_dataset(cut.parent, checksums=sums)
    assert len(cut.read_bytes()) == 1000
    # Keras' folder made a link to the user's own data, or a file the system will not let us read: never removed.
    shutil.move(data.keras_cache_dir(), tmp_path / "mine")
    data.keras_cache_dir().symlink_to(tmp_path / "mine")
    with pytest.raises(FmnistError, match="cannot be decompressed"):
        data.load_dataset(checksums=sums)
    assert len((tmp_path / "mine" / cut.name).read_bytes()) == 1000
    data.keras_cache_dir().unlink()
    shutil.move(tmp_path / "mine", data.keras_cache_dir())
    cut.unlink()
    cut.symlink_to("/proc/self/mem")  # read, it fails with an I/O error, even as root
    with pytest.raises(FmnistError, match=f"cannot read {cut}"):
        data.load_dataset(checksums=sums)
    assert cut.is_symlink()


def test_failed_download_says_how_to_get_the_data(tmp_path, monkeypatch, refusing_port):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv("FMNIST_DATA_URL", f"http://127.0.0.1:{refusing_port}/")  # connection refused at once
    with pytest.raises(FmnistError, match="could not download.*apt-get install dataset-fashion-mnist"):
        data.load_dataset()


@pytest.mark.realdata
def test_real_data_verifies(real_data_dir):
    dataset = data.load_dataset(real_data_dir)
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_test.shape == (10000, 28, 28)
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert dataset.checksums == data.CHECKSUMS


def test_describe_counts_the_classes_and_draws_samples_into_a_folder(tiny_data, tmp_path, monkeypatch):
    folder, sums = tiny_data
    shown = tmp_path / "pictures" / "samples.png"
    shown.parent.mkdir()
    summary = data.describe(folder, show=shown, checksums=sums)
    assert summary["train_images"] == 60 and sum(summary["train_per_class"].values()) == 60
    # Each class named with its label and counts, as a student would look them up.
    dataset = data.load_dataset(folder, sums)
    assert sum(summary["test_per_class"].values()) == len(dataset.y_test)
    for label, name in enumerate(data.CLASS_NAMES):
        row = f"  {label} {name:<12} {np.sum(dataset.y_train == label):>6} {np.sum(dataset.y_test == label):>6}"
        assert row in data.describe_text(summary).splitlines()
    assert summary["samples_png"] == shown and shown.stat().st_size > 0
    assert data.describe_text(summary).splitlines()[-1] == f"samples: {shown}"
    assert summary["files"] == {name: folder / f"{name}.gz" for name in sums}  # the files read, named in the text
    assert all(f"  {name}.gz " in data.describe_text(summary) for name in sums)
    with pytest.raises(FmnistError, match="--show .* is a folder"):
        data.describe(folder, show=tmp_path, checksums=sums)
    link = tmp_path / "latest.png"  # drawn where the link leads, the link kept
    link.symlink_to(shown)
    shown.unlink()
    assert data.describe(folder, show=link, checksums=sums)["samples_png"] == link
    assert link.is_symlink() and shown.stat().st_size > 0
    with monkeypatch.context() as relative:  # given from where the user stands: named whole, to be found from any
        relative.chdir(tmp_path)
        summary = data.describe(folder, show=Path("pictures") / "here.png", checksums=sums)
        assert data.describe_text(summary).splitlines()[-1] == f"samples: {tmp_path / 'pictures' / 'here.png'}"


def test_describe_hashes_the_files_again_rather_than_trusting_the_cache(tiny_data):
    folder, sums = tiny_data
    data.load_dataset(folder, checksums=sums)  # checked, and cached under the files' size and time
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    with gzip.open(labels, "rb") as stream:
        raw = bytearray(stream.read())
    raw[-1] = (raw[-1] + 1) % 10  # one test label changed, the file's size and time put back as they were
    labels.write_bytes(gzip.compress(bytes(raw), mtime=0)[:stat.st_size].ljust(stat.st_size, b"\0"))
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(FmnistError, match=f"{labels} (has SHA-256|cannot be decompressed)"):
        data.describe(folder, checksums=sums)
