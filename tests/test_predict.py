import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fmnist import artifacts, model_files
from fmnist.cli import main
from fmnist.data import load_dataset, to_features
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.images import BadInput, load_input
from fmnist.predict import MAX_FILE_BYTES, Classifier, as_text, describe, predict_files, shown_name
from samples import encode, garment, jpeg_with_damaged_exif, npy, photo_like, png_claiming


def write_inputs(folder):
    folder.mkdir(exist_ok=True)
    files = {
        "dark-on-light.png": encode(garment(True)),
        "light-on-dark.jpg": encode(garment(False), "JPEG"),
        "pixels.npy": npy(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)),
        "floats.npy": npy(np.random.default_rng(1).random(784, dtype=np.float32)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def test_classifier_matches_keras_predict(tiny_run_dir):
    x = np.random.default_rng(0).random((300, 28, 28), dtype=np.float32)
    expected = model_files.load_model(tiny_run_dir)[0].predict(x.reshape(300, 784), verbose=0)
    classifier = Classifier(tiny_run_dir)
    np.testing.assert_allclose(classifier.probabilities(x), expected, atol=1e-5)
    assert classifier.sha256 == artifacts.sha256_file(tiny_run_dir / artifacts.MODEL)


def test_describe_lists_the_top_k_and_flags_the_unsure():
    probabilities = np.array([0.05, 0.4, 0.05, 0.3, 0, 0, 0.2, 0, 0, 0])
    answer = describe(probabilities, top_k=3)
    assert [t["class"] for t in answer["top"]] == ["Trouser", "Dress", "Shirt"] and answer["unsure"]
    assert not describe(probabilities, top_k=1, unsure_below=0.4)["unsure"]
    assert len(describe(probabilities, top_k=10)["top"]) == 10


def test_the_text_never_calls_an_answer_short_of_certain_100_percent():
    nearly = describe(np.array([0.9999996, 0.0000004] + [0] * 8), top_k=2, unsure_below=1)  # 1.0 to 6 decimals
    certain = describe(np.eye(10)[3], top_k=1, unsure_below=1)
    assert as_text({"predictions": [{"input": "a.png", **nearly}, {"input": "b.png", **certain}]}) == (
        "a.png: T-shirt/top >99.9% (Trouser 0.0%)  [unsure]\nb.png: Dress 100.0%")


def test_an_image_piped_in_is_read_from_standard_input(tmp_path, tiny_run_dir, monkeypatch, capsys):
    photo = write_inputs(tmp_path)[0]
    command = ["predict", str(tiny_run_dir), "-", str(photo), "--json"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo.read_bytes())))  # as a pipe gives it
    assert main(command) == 0
    piped, named = json.loads(capsys.readouterr().out)["predictions"]
    assert piped["input"] == "-" and piped["top"] == named["top"]
    assert main([*command[:-2], "-", "-"]) == 1
    assert capsys.readouterr().err == "fmnist: error: '-' (standard input) is given twice: it holds one image\n"
    # A file named "-", given as ./- (as ./* expands), is that file, not the pipe, and is named so.
    (tmp_path / "-").write_bytes(photo.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo.read_bytes())))
    assert main([*command[:2], "./-", "-", "--json"]) == 0
    from_file, from_pipe = json.loads(capsys.readouterr().out)["predictions"]
    assert from_file["input"] == str(tmp_path / "-") and from_pipe["input"] == "-"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo.read_bytes())))
    assert main([*command[:2], "./-", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / '-'}: ") and lines[1].startswith("-: ")
    assert [shown_name(p) for p in (Path("./-"), "-", tmp_path / "shirt.png")] == ["-", "standard input", "shirt.png"]
    # A non-blocking pipe with nothing in it yet (as some parents leave one): that input's line, the others answered.
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    with open(read_end, "rb") as pipe, open(write_end, "wb"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(pipe))
        assert main([*command[:2], "-", str(photo)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{photo}: ") and err == ("fmnist: error: standard input had nothing to read yet (a "
                                                   "non-blocking pipe): pipe the image in whole, or save it and give "
                                                   "the file\n")


def test_predict_command_answers_photos_and_arrays(tmp_path, tiny_run_dir, monkeypatch, capsys):
    paths = write_inputs(tmp_path / "in")
    shown = tmp_path / "out" / "seen.png"
    shown.parent.mkdir()
    # Given relative to where the command runs, named absolute in --json, as every path it prints
    monkeypatch.chdir(tmp_path)
    status = main(["predict", str(tiny_run_dir), *(str(p.relative_to(tmp_path)) for p in paths), "--top-k", "4",
                   "--show", "out/seen.png", "--json"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    answer = json.loads(printed.out)
    assert answer["model_sha256"] == (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    assert [a["input"] for a in answer["predictions"]] == list(map(str, paths)) and answer["shown"] == str(shown)
    for a in answer["predictions"]:
        probabilities = [t["probability"] for t in a["top"]]
        assert len(probabilities) == 4 and probabilities == sorted(probabilities, reverse=True)
        assert {t["class"] for t in a["top"]} <= set(CLASS_NAMES) and a["unsure"] == (probabilities[0] < 0.5)
    with Image.open(shown) as picture:  # one row per input
        assert picture.format == "PNG" and picture.height > 3 * picture.width / 4
        rgb = np.asarray(picture.convert("RGB")).astype(int)
    # The occlusion maps, nothing else in the picture is reddish: faint, as the tiny model's answers hardly move.
    red = (rgb[..., 0] > rgb[..., 1] + 8) & (rgb[..., 0] > rgb[..., 2] + 8)
    assert red.sum() > 200

    in_process = predict_files(tiny_run_dir, paths, top_k=4)
    for ours, theirs in zip(in_process["predictions"], answer["predictions"]):
        assert [t["index"] for t in ours["top"]] == [t["index"] for t in theirs["top"]]

    assert main(["predict", str(tiny_run_dir / artifacts.MODEL), str(paths[0]), "--top-k", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{paths[0]}: ") and len(text.splitlines()) == 1


def test_a_npy_stack_of_images_is_answered_image_by_image_named_by_its_index(tmp_path, tiny_run_dir, capsys):
    pixels = np.random.default_rng(4).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "stack.npy", pixels[:5])
    np.save(tmp_path / "flat.npy", pixels[5:7].reshape(2, 784).astype(np.float32) / 255)
    np.save(tmp_path / "planes.npy", pixels[6:9])  # three images, though a colour image's planes would look so too
    np.save(tmp_path / "one.npy", pixels[:1])  # a stack of one, as x[i:i + 1] saves it: indexed as any stack
    np.save(tmp_path / "bad.npy", np.full((3, 784), 2.0))
    paths = [tmp_path / name for name in ("stack.npy", "one.npy", "flat.npy", "planes.npy", "bad.npy")]
    result = predict_files(tiny_run_dir, paths, top_k=1, show=tmp_path / "seen.png")
    answers = result["predictions"]
    expected = [(paths[0], i) for i in range(5)] + [(paths[1], 0)] + [(paths[2], 0), (paths[2], 1)] + [
        (paths[3], i) for i in range(3)]
    assert [(a["input"], a.get("stack_index")) for a in answers] == expected
    assert result["errors"] == [{"input": paths[4], "error": f"{paths[4]} holds floats outside [0, 1] (scale pixels "
                                                            "by 1/255, or send integers 0-255)"}]
    # Each answer is its image's, as the classifier gives it the stack in order.
    images = np.concatenate([pixels[:5], pixels[:1], pixels[5:7], pixels[6:9]]).astype(np.float32) / 255
    best = Classifier(tiny_run_dir).probabilities(images).argmax(axis=1)
    assert [a["top"][0]["index"] for a in answers] == best.tolist()
    assert main(["predict", str(tiny_run_dir), str(paths[0]), str(paths[1]), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{paths[0]}[{i}]" for i in range(5)] + [f"{paths[1]}[0]"]
    with Image.open(tmp_path / "seen.png") as picture:  # a row an image, each titled with its index
        assert picture.height > 10 * picture.width / 4
    np.save(tmp_path / "single.npy", pixels[0])  # one image without a stack's axis: no index
    assert main(["predict", str(tiny_run_dir), str(tmp_path / "single.npy"), "--top-k", "1", "--json"]) == 0
    assert "stack_index" not in json.loads(capsys.readouterr().out)["predictions"][0]
    # One image per input over HTTP (a stack goes whole to predict, the Python API or an exported model).
    with pytest.raises(BadInput, match=r"has shape \(5, 28, 28\), 5 images; give one image per file or input"):
        load_input((tmp_path / "stack.npy").read_bytes(), "stack.npy")


def test_a_photo_with_a_damaged_exif_block_is_classified_quietly_and_shown_as_png(tmp_path, tiny_run_dir):
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(jpeg_with_damaged_exif(garment()))
    shown = tmp_path / "seen.PNG"
    result = run_cli("-q", "predict", str(tiny_run_dir), str(photo), "--show", str(shown))
    assert result.returncode == 0 and result.stderr == "", result.stderr  # Pillow's EXIF warning was noise here
    assert result.stdout.startswith(f"{photo}: ")
    with Image.open(shown) as picture:
        assert picture.format == "PNG"


def test_show_refuses_to_overwrite_an_input_or_to_write_a_png_under_another_name(tmp_path, tiny_run_dir):
    (photo,) = write_inputs(tmp_path / "in")[:1]
    before = photo.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    with pytest.raises(FmnistError, match=f"--show {link} is one of the inputs: name another file for the picture"):
        predict_files(tiny_run_dir, [photo], show=link)
    with pytest.raises(FmnistError, match=r"--show .*seen.jpg: it is written as PNG; name it seen.png"):
        predict_files(tiny_run_dir, [photo], show=tmp_path / "seen.jpg")
    assert photo.read_bytes() == before and not (tmp_path / "seen.jpg").exists()
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)  # an input that cannot be read gets its own line; the others are answered and drawn
    result = predict_files(tiny_run_dir, [loop, photo], show=tmp_path / "seen.png")
    assert [p["input"] for p in result["predictions"]] == [photo] and result["shown"] == tmp_path / "seen.png"
    assert [e["input"] for e in result["errors"]] == [loop] and (tmp_path / "seen.png").is_file()
    # A refusal, of the inputs or of the model, leaves no new folder behind where the picture was to go.
    (tmp_path / "empty.png").write_bytes(b"")
    for source, inputs in [(tiny_run_dir, [tmp_path / "empty.png"]), (tmp_path / "no run", [photo])]:
        with pytest.raises(FmnistError):
            predict_files(source, inputs, show=tmp_path / "typo" / "sub" / "seen.png")
        assert not (tmp_path / "typo").exists()


def test_only_models_this_project_wrote_are_loaded(tmp_path, tiny_run_dir):
    image = write_inputs(tmp_path / "in")[:1]
    foreign = tmp_path / "model.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n")
    unchecked = tmp_path / "copy" / "model.keras"
    unchecked.parent.mkdir()
    shutil.copy(tiny_run_dir / artifacts.MODEL, unchecked)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_run_dir, tampered)
    with open(tampered / artifacts.MODEL, "ab") as f:
        f.write(b"\0")
    for source, reason in ((foreign, "is not a .keras model"), (unchecked, ".sha256 is missing"),
                           (tampered, "does not match its recorded SHA-256"), (tmp_path, "no model at")):
        with pytest.raises(FmnistError, match=reason):
            predict_files(source, image)

    refused = run_cli("predict", str(tampered), str(image[0]))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("fmnist: error:") and "SHA-256" in refused.stderr


def test_bad_inputs_and_options_are_one_line_errors(tmp_path, tiny_run_dir):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    os.mkfifo(tmp_path / "pipe.png")  # read whole, it would hang
    with open(tmp_path / "huge.png", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    (tmp_path / "bomb.png").write_bytes(png_claiming(10_000, 10_000))  # Pillow warns of it as well
    for args, reason in (([str(text)], "notes.txt is not a supported image"),
                         ([str(tmp_path / "missing.png")], "cannot read"),
                         ([str(tmp_path / "pipe.png")], "pipe.png is not a file"),
                         (["/dev/zero"], "/dev/zero is not a file"),
                         ([str(tmp_path)], f"{tmp_path} is a folder: give image or .npy files, such as those in "
                                           f"it ({tmp_path / '*'})"),
                         ([str(tmp_path / "huge.png")], "huge.png is over 64 MiB"),
                         ([str(tmp_path / "bomb.png")], "bomb.png is too large when decoded (100,000,000 pixels)")):
        result = run_cli("-q", "predict", str(tiny_run_dir), *args)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("fmnist: error:") and reason in result.stderr

    neither = run_cli("-q", "predict", str(tiny_run_dir), str(text), str(tmp_path / "missing.png"))
    assert neither.returncode == 1 and neither.stderr.count("\n") == 2, neither.stderr  # a line each
    first, second = neither.stderr.splitlines()
    assert first.startswith(f"fmnist: error: {text} is not a supported image")
    assert second.startswith(f"fmnist: error: cannot read {tmp_path / 'missing.png'}")


def test_the_readable_files_are_answered_and_each_other_gets_its_error_line(tmp_path, tiny_run_dir, capsys):
    good = write_inputs(tmp_path)[:2]
    (tmp_path / "notes.txt").write_text("not an image")
    inputs = [good[0], tmp_path / "notes.txt", good[1], tmp_path / "missing.png"]
    assert main(["-q", "predict", str(tiny_run_dir), *map(str, inputs), "--json"]) == 1
    printed = capsys.readouterr()
    answer = json.loads(printed.out)
    assert [a["input"] for a in answer["predictions"]] == list(map(str, good))
    assert [e["input"] for e in answer["errors"]] == [str(inputs[1]), str(inputs[3])]
    assert printed.err.splitlines() == [f"fmnist: error: {e['error']}" for e in answer["errors"]]
    assert "not a supported image" in answer["errors"][0]["error"] and "cannot read" in answer["errors"][1]["error"]
    alone = predict_files(tiny_run_dir, good)
    assert [a["top"] for a in answer["predictions"]] == [a["top"] for a in alone["predictions"]]
    assert alone["errors"] == []


def test_json_has_the_same_shape_when_no_file_could_be_read(tmp_path, tiny_run_dir, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    inputs = [str(tmp_path / "notes.png"), str(tmp_path / "missing.png")]
    assert main(["-q", "predict", str(tiny_run_dir), *inputs, "--json"]) == 1
    printed = capsys.readouterr()
    answer = json.loads(printed.out)
    assert answer["predictions"] == [] and [e["input"] for e in answer["errors"]] == inputs
    assert printed.err.splitlines() == [f"fmnist: error: {e['error']}" for e in answer["errors"]]
    assert main(["-q", "predict", str(tiny_run_dir), *inputs]) == 1 and capsys.readouterr().out == ""  # text: none


def test_an_unreadable_name_with_a_newline_beside_good_inputs_is_still_one_line(tmp_path, tiny_run_dir, capsys):
    good = write_inputs(tmp_path)[0]
    assert main(["-q", "predict", str(tiny_run_dir), str(good), str(tmp_path / "no\nsuch.png")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fmnist: error: cannot read ") and "no\\nsuch.png" in error


def test_a_readable_name_with_a_newline_or_an_escape_keeps_its_answer_on_one_line(tmp_path, tiny_run_dir, capsys):
    good = write_inputs(tmp_path)[0]
    odd = tmp_path / "shirt\nno.png"
    odd.write_bytes(good.read_bytes())
    shown = tmp_path / "seen\x1b[2J.png"  # a terminal's escape (here: clear the screen) in the picture's name
    assert main(["-q", "predict", str(tiny_run_dir), str(odd), str(good), "--show", str(shown)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{tmp_path}/shirt\\nno.png: ") and "\x1b" not in "".join(lines)
    assert lines[2] == f"shown: {tmp_path}/seen\\x1b[2J.png"


def test_a_show_folder_removed_while_the_model_works_loses_no_answer(tmp_path, tiny_run_dir, monkeypatch):
    import fmnist.explain

    photo = write_inputs(tmp_path)[0]
    folder = tmp_path / "pictures"
    folder.mkdir()
    occlusion_maps = fmnist.explain.occlusion_maps

    def removing_the_folder(*args, **kwargs):  # after --show's folder was checked, before the picture is drawn
        shutil.rmtree(folder)
        return occlusion_maps(*args, **kwargs)

    monkeypatch.setattr(fmnist.explain, "occlusion_maps", removing_the_folder)
    result = predict_files(tiny_run_dir, [photo], show=folder / "seen.png")
    assert [a["input"] for a in result["predictions"]] == [photo] and "shown" not in result
    assert result["errors"] == [{"input": folder / "seen.png",
                                 "error": f"cannot write {folder / 'seen.png'}: No such file or directory"}]


@pytest.mark.realdata
def test_photos_are_recognised_nearly_as_well_as_the_raw_arrays(tmp_path, real_run_dir, real_data_dir):
    dataset = load_dataset(real_data_dir)
    chosen = np.random.default_rng(5).choice(len(dataset.x_test), 300, replace=False)
    images, labels = dataset.x_test[chosen], dataset.y_test[chosen]
    paths = []
    for seed, image in enumerate(images):
        data, name = photo_like(image, seed)
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    assert sum(Image.open(p).getexif().get(0x0112) == 6 for p in paths) == 100  # a third arrive turned

    classifier = Classifier(real_run_dir)
    raw = classifier.probabilities(to_features(images)).argmax(axis=1)
    answers = predict_files(real_run_dir, paths, top_k=1)["predictions"]
    photo = np.array([a["top"][0]["index"] for a in answers])
    raw_accuracy, photo_accuracy = (raw == labels).mean(), (photo == labels).mean()
    kinds = np.arange(len(paths)) % 5  # photo_like's white, noisy, uneven and grey backdrops, and grey garments
    by_kind = ", ".join(f"{(photo == labels)[kinds == kind].mean():.1%}" for kind in range(5))
    print(f"\n300 test images: raw arrays {raw_accuracy:.1%}, as photos {photo_accuracy:.1%} ({by_kind} on white, "
          f"noisy, uneven and grey backdrops, and of grey garments on white), same answer {(photo == raw).mean():.1%}")
    assert raw_accuracy > 0.75
    assert photo_accuracy >= raw_accuracy - 0.03, (raw_accuracy, photo_accuracy)
    assert (photo == raw).mean() >= 0.85


def test_show_draws_at_most_max_shown_inputs_and_says_so(tmp_path, tiny_run_dir, monkeypatch, caplog):
    import fmnist.predict

    monkeypatch.setattr(fmnist.predict, "MAX_SHOWN", 2)
    paths = write_inputs(tmp_path / "in")[:3]
    shown = tmp_path / "seen.png"
    result = predict_files(tiny_run_dir, paths, show=shown)
    assert len(result["predictions"]) == 3  # every input is answered; only the picture is cut
    assert "--show draws the first 2 of the 3 inputs" in caplog.text
    two_rows = opened_size(shown)
    predict_files(tiny_run_dir, paths[:1], show=shown)
    one_row = opened_size(shown)
    assert two_rows[1] == pytest.approx(2 * one_row[1], rel=0.15)


def opened_size(path) -> tuple[int, int]:
    with Image.open(path) as picture:
        return picture.size


def test_the_classifier_refuses_a_shape_or_a_range_the_model_was_not_made_for(tiny_run_dir):
    classifier = Classifier(tiny_run_dir)
    for wrong in (np.zeros((28, 28)), np.zeros((2, 100)), np.zeros((2, 28, 28, 1))):  # one image, not a batch of one
        with pytest.raises(FmnistError, match=r"give n x 28 x 28 or n x 784 pixels \(one image: image\[None\]\)$"):
            classifier.probabilities(wrong)
    for wrong in (np.full((1, 784), 255, np.uint8), np.full((1, 28, 28), np.nan), np.full((1, 784), -0.1)):
        with pytest.raises(FmnistError, match=r"^pixels must lie in \[0, 1\], light on dark as in Fashion-MNIST"):
            classifier.probabilities(wrong)
    assert classifier.probabilities(np.zeros((1, 28, 28))).shape == (1, 10)


def test_the_inputs_as_the_model_took_them_are_saved_for_an_exported_model(tmp_path, tiny_run_dir, capsys):
    paths = write_inputs(tmp_path / "in")
    saved = tmp_path / "inputs.npy"
    assert main(["predict", str(tiny_run_dir), *map(str, paths), "--top-k", "10", "--save-inputs", str(saved),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["saved_inputs"] == str(saved)
    inputs = np.load(saved)
    assert inputs.shape == (len(paths), 784) and inputs.dtype == np.float32  # as `fmnist export`'s files take them
    given = [{t["class"]: t["probability"] for t in answer["top"]} for answer in result["predictions"]]
    again = Classifier(tiny_run_dir).probabilities(inputs)  # the photos' answers, from the saved inputs alone
    assert np.allclose(again, [[answer[c] for c in CLASS_NAMES] for answer in given], atol=1e-6)
    assert main(["predict", str(tiny_run_dir), str(paths[0]), "--save-inputs", str(saved)]) == 1  # like a user's own
    assert "an array is there, and fmnist writes over none" in capsys.readouterr().err
    assert np.load(saved).shape == (len(paths), 784)
    for wrong, told in ((paths[2], "is one of the inputs: name another file for the inputs"),
                        (tmp_path / "inputs.csv", "it is written as NPY; name it inputs.npy")):
        with pytest.raises(FmnistError, match=told):
            predict_files(tiny_run_dir, paths, save_inputs=wrong)


def test_saved_inputs_that_cannot_be_written_lose_no_answer(tmp_path, tiny_run_dir, monkeypatch):
    photo = write_inputs(tmp_path)[0]
    folder = tmp_path / "arrays"
    folder.mkdir()
    probabilities = Classifier.probabilities

    def removing_the_folder(self, images):  # after --save-inputs' folder was checked, before the file is written
        shutil.rmtree(folder, ignore_errors=True)
        return probabilities(self, images)

    monkeypatch.setattr(Classifier, "probabilities", removing_the_folder)
    result = predict_files(tiny_run_dir, [photo], save_inputs=folder / "inputs.npy")
    assert [a["input"] for a in result["predictions"]] == [photo] and "saved_inputs" not in result
    [failure] = result["errors"]
    assert failure["input"] == folder / "inputs.npy" and str(folder) in failure["error"]


def test_an_image_given_first_is_told_the_run_comes_first(tmp_path, tiny_run_dir):
    from fmnist.predict import predict_command

    photo = tmp_path / "shirt.png"
    photo.write_bytes(encode(garment(), "PNG"))
    with pytest.raises(FmnistError, match=f"^{photo} is a file, not a run: .*; the run comes first, then the images: "
                                          r"fmnist predict RUN IMAGE \[IMAGE ...\]$"):
        predict_command(photo, [tiny_run_dir], runs_dir=tmp_path)
    exported = tmp_path / "exports" / "onnx" / artifacts.EXPORT_FILES["onnx"]  # an export's is not taken for an image
    exported.parent.mkdir(parents=True)
    exported.write_bytes(b"onnx")
    artifacts.write_json(exported.parent / artifacts.EXPORT_INFO, {})
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    for first in (exported, run / artifacts.CONFIG, tmp_path / "clf.onnx"):  # a run's file, a renamed model
        first.touch()
        with pytest.raises(FmnistError) as refused:
            predict_command(first, [photo], runs_dir=tmp_path)
        assert "the run comes first" not in str(refused.value)
