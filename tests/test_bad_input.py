"""The bad-input matrix of unattended runs: each case is one line naming the problem and the fix, exit code 2,
no traceback, and earlier results intact. (More cases: test_cli.py, test_data.py, test_inception.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from sanity_cli.photos import load_photos

from conftest import run_dirs
from test_cli import assert_one_line_error

CHEAP = ("method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")


@pytest.mark.parametrize("args, fragments", [
    (["run", "nosuchkey=1"], ["nosuchkey"]),                                     # unknown key
    (["run", "test=sideways"], ["test", "sideways"]),                            # unknown group choice
    (["run", "n_images=abc"], ["n_images"]),                                     # wrong type
    (["run", "method=[smoothgrad_gradient]", "method.smoothgrad_gradient.samples=-5"], ["samples"]),
    (["run", "method=[vargrad]", "method.vargrad.sigma=0"], ["sigma", "> 0"]),
    (["run", "method=[integrated_gradients]", "method.integrated_gradients.steps=0"], ["steps"]),
    (["run", "verdict.threshold=-1.5"], ["threshold", "[-1, 1]"]),
    (["run", "resume=perhaps"], ["resume"]),
    (["run", "hydra/launcher=nonesuch"], ["nonesuch"]),
    (["run", "method=[gradient,nonesuch]"], ["unknown method 'nonesuch'; choose from", "guided_backprop"]),
    (["run", "metric=[nonesuch]"], ["unknown metric 'nonesuch'; choose from", "hog_spearman, spearman"]),
    (["run", "verdict.rule=majority"], ["verdict.rule must be one of baseline, threshold"]),
    (["run", "test.init=zeros"], ["test.init must be one of", "permutation"]),
    (["run", "target=somewhere"], ["target must be one of", "predicted_per_stage"]),
    (["run", "precision=float8"], ["precision must be one of", "mixed_bfloat16"]),
    # issue 16: every spelling of a finished run's directory, user config folders, photos, paths
    (["run", 'hydra.run.dir="results/earlier run"'], ["already holds a finished run"]),
    (["run", "hydra.run.dir='results/sub/../earlier run'"], ["already holds a finished run"]),
    (["run", "hydra.run.dir=${oc.env:EARLIER}"], ["already holds a finished run"]),
    (["train", "hydra.run.dir='results/earlier run'"], ["already holds a finished run"]),
    (["run", "--config-dir", "{user}", "experiment=broken"], ["broken.yaml:2", "YAML syntax error"]),
    (["run", "--config-dir", "{user}", "experiment=broken", "--cfg", "job"], ["broken.yaml:2", "YAML syntax"]),
    (["run", "--config-dir", "nowhere"], ["--config-dir", "no such folder"]),
    (["run", "--config-path", "{user}", "--config-name", "absent"], ["absent"]),
    (["run", "-m", "seed=0,1", "hydra.sweep.dir='results/earlier run/manifest.json'"], ["cannot write results"]),
    (["reproduce", "nightly", "--config-dir", "{user}"], ["suites/nightly.yaml:2", "YAML syntax error"]),
    (["run", "model=inception", "model.weights=none", "data.path={photos}"], ["no readable image"]),
    (["run", "data.path=123"], ["data.path must be a path"]),
    (["run", "cache_dir=123"], ["cache_dir must be a path"]),
    (["run", "metric.spearman_abs.normalisation=zscore"], ["metric.spearman_abs.normalisation must be one of"]),
    # issue 24: the released recipe's settings
    (["run", "image_choice=last"], ["image_choice must be one of random, first"]),
    (["run", "train.l2=-0.001"], ["train.l2 must be a number >= 0"]),
    (["run", "train.l2=strong"], ["train.l2"]),
    (["run", "train.validation_from=middle"], ["train.validation_from must be one of start, end"]),
    # issue 30: lists, ranges found late before, and paths Hydra's grammar refused
    (["run", "method=[gradient,gradient]"], ["names gradient twice; list each method once"]),
    (["run", "metric=[spearman_abs,spearman_abs]"], ["names spearman_abs twice; list each metric once"]),
    (["run", "metric=[]"], ["metric=[] selects no metric; name at least one"]),
    (["run", "method=[]"], ["method=[] selects no method; name at least one"]),
    (["run", "metric=[hog_pearson]", "metric.hog_pearson.pixels_per_cell=-4"], ["pixels_per_cell must be a positive"]),
    (["run", "metric=[hog_pearson]", "metric.hog_pearson.pixels_per_cell=abc"], ["pixels_per_cell must be"]),
    (["run", "metric=[hog_pearson]", "metric.hog_pearson.pixels_per_cell=100"], ["larger than the 28x28 maps"]),
    (["run", "test=input_invariance", "test.shift=nan"], ["test.shift must be a non-zero number, got nan"]),
    (["run", "data.path=~/no_such_sanity_data"], ["no_such_sanity_data does not exist; set data.path"]),
    (["run", "data.path=/nonexistent/a=b"], ["data.path /nonexistent/a=b does not exist"]),
    (["run", "data.path=/nonexistent/fichier_é"], ["data.path /nonexistent/fichier_é does not exist"]),
    (["reproduce", "{user}/suites/one_bad_job.yaml"], ["job bad:", "n_images"]),
    (["train", "train.l2=-1"], ["train.l2 must be a number >= 0"]),
])
def test_bad_input_matrix(sanity, tmp_path, args, fragments):
    """Each case: one line, exit 2, no traceback, and the earlier finished run (results/earlier run) and
    everything else under the working directory byte-identical afterwards, nothing new written."""
    from test_run_dirs import checksums, finished_run

    finished_run(tmp_path / "results" / "earlier run")
    user = tmp_path / "user"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "broken.yaml").write_text("n_images: [1, 2\n")
    (user / "suites").mkdir()
    (user / "suites" / "nightly.yaml").write_text("jobs: {a: [seed=1\n")
    (user / "suites" / "one_bad_job.yaml").write_text("jobs:\n  good: [seed=1]\n  bad: [n_images=abc]\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_text("not a JPEG")
    before, listing = checksums(tmp_path), sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.replace("{user}", str(user)).replace("{photos}", str(photos)) for a in args]
    cheap = CHEAP if args[0] == "run" and "--cfg" not in args else ()  # before the case's own overrides
    result = sanity(args[0], *cheap, *args[1:], env={"EARLIER": str(tmp_path / "results" / "earlier run")})
    assert_one_line_error(result, *fragments)
    assert checksums(tmp_path) == before
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing, "nothing new may appear"


def test_missing_data_path(sanity, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(sanity("run", *CHEAP, "data.source=idx", f"data.path={missing}"), str(missing))


def test_empty_image_folder(sanity, tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    result = sanity("run", "model=inception", "model.weights=none", *CHEAP, f"data.path={empty}")
    assert_one_line_error(result, "holds no images", str(empty))


def test_unreadable_photos_are_skipped_with_a_warning_and_none_left_is_one_line(sanity, tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.jpg").write_text("this is text, not a JPEG")
    result = sanity("run", "model=inception", "model.weights=none", *CHEAP, f"data.path={folder}")
    assert_one_line_error(result, "no readable image", str(folder))
    assert not (tmp_path / "results").exists()

    lines = []
    Image.new("RGB", (40, 30), (10, 20, 30)).save(folder / "good.png")
    photos = load_photos(str(folder), size=16, log=lines.append)
    assert photos.provenance["files"] == ["good.png"]
    assert [line for line in lines if "warning" in line] == [
        "data: warning: skipping broken.jpg: not a readable image (UnidentifiedImageError)"]


def test_photo_modes_decode_to_the_right_rgb(tmp_path):
    """Made with PIL in the test: each file is a uniform patch whose true RGB value is known."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    c, m, y, k = 50, 100, 150, 20
    Image.new("CMYK", (20, 20), (c, m, y, k)).save(folder / "a_cmyk.jpg", quality=100)
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(folder / "b_gray16.png")
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(folder / "c_palette.png", transparency=0)
    Image.new("LA", (20, 20), (90, 128)).save(folder / "d_la.png")
    Image.new("RGBA", (20, 20), (30, 60, 90, 0)).save(folder / "e_rgba.png")
    tall = Image.new("RGB", (20, 40), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 0, 20, 20))  # blue on top, red below
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise (top -> right)
    tall.save(folder / "f_exif.jpg", quality=100, exif=exif)

    lines = []
    photos = load_photos(str(folder), size=20, log=lines.append)
    centre = photos.x_test[:, 10, 10, :] * 255
    np.testing.assert_allclose(centre[0], [(255 - c) * (255 - k) / 255, (255 - m) * (255 - k) / 255,
                                           (255 - y) * (255 - k) / 255], atol=1.0)   # not its CMY channels
    np.testing.assert_allclose(centre[1], [40000 / 65535 * 255] * 3, atol=1.0)          # not scaled by its max
    np.testing.assert_allclose(centre[2], [200, 100, 50], atol=1.0)
    np.testing.assert_allclose(centre[3], [90, 90, 90], atol=1.0)
    np.testing.assert_allclose(centre[4], [30, 60, 90], atol=1.0)
    upright = photos.x_test[4 + 1]  # wide after the EXIF turn: centre crop of [red | blue] left to right
    assert upright[10, 1, 0] > 0.9 and upright[10, 18, 2] > 0.9
    assert sum("data: " in line and ": " in line and "->" in line for line in lines) >= 5
    assert any("CMYK -> RGB" in line for line in lines) and any("/ 65535" in line for line in lines)
    assert any("f_exif.jpg: EXIF orientation applied" in line for line in lines)


def test_grayscale_and_rgba_photos_become_rgb(tmp_path):
    """A grayscale photo among RGB ones is the same picture in three channels; RGBA loses its alpha."""
    from skimage import data, io

    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = data.chelsea()
    io.imsave(folder / "a_gray.png", data.camera())
    io.imsave(folder / "b_rgb.png", rgb)
    io.imsave(folder / "c_rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))
    photos = load_photos(str(folder), size=299, log=lambda *_: None)
    assert photos.x_test.shape == (3, 299, 299, 3)
    gray, colour, alpha = photos.x_test
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(alpha, colour, atol=1e-6)


def test_mnist_model_refuses_photos(sanity, tmp_path):
    assert_one_line_error(sanity("run", "model=mnist_cnn", "data=images", *CHEAP), "data=mnist")


def test_missing_weights_file(sanity, tmp_path):
    missing = tmp_path / "inception.h5"
    assert_one_line_error(sanity("run", "model=inception", f"model.weights={missing}", *CHEAP), str(missing))


def test_full_disk_while_writing_results_keeps_earlier_results(sanity, sanity_process, tmp_path):
    """ENOSPC while writing metrics.csv (injected through sitecustomize, as the OS would raise it): one line,
    exit 2, no half-written file, and the earlier run next to it is untouched."""
    earlier = sanity("run", *CHEAP)
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    (done,) = run_dirs(tmp_path)
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()}

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import errno, os\n"
        "import pandas\n"
        "_to_csv = pandas.DataFrame.to_csv\n"
        "def to_csv(self, path=None, *args, **kwargs):\n"
        "    if path is not None and os.path.basename(str(path)).startswith('.metrics.'):\n"
        "        with open(path, 'w') as handle:\n"
        "            handle.write('model,te')\n"
        "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return _to_csv(self, path, *args, **kwargs)\n"
        "pandas.DataFrame.to_csv = to_csv\n")
    full = tmp_path / "full"
    result = sanity_process("run", *CHEAP, f"hydra.run.dir={full}", env={"PYTHONPATH": str(hooks)})
    assert_one_line_error(result, "No space left on device", "metrics.csv")
    assert not (full / "metrics.csv").exists() and not (full / "manifest.json").exists()
    assert not [p for p in full.rglob("*") if ".tmp" in p.name]
    assert {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()} == before


def _nan_pixels(path):
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    x[1, 0, 0, 0] = np.nan
    np.savez(path, x_test=x, y_test=np.array([0, 1, 2]))


@pytest.mark.parametrize("make, args, fragments", [
    # issue 30 (6): messages that used to mislead
    (_nan_pixels, ["model=linear", "data=npz", "data.path={file}"],
     ["x_test holds NaN or infinite pixels (images [1])"]),
    (lambda path: path.write_text("hello"), ["model=linear", "data=npz", "data.path={file}"],
     ["is not a numpy .npz archive (not a zip file)"]),
    (lambda path: path.write_text("junk"), ["model=keras", "model.path={file}"],
     ["is not a Keras model Keras can load (not a zip archive"]),
])
def test_broken_files_are_named_in_one_line(sanity, tmp_path, make, args, fragments):
    file = tmp_path / ("given.keras" if "model=keras" in args else "given.npz")
    make(file)
    result = sanity("run", *CHEAP, *[a.replace("{file}", str(file)) for a in args])
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "results").exists()


def test_a_folder_of_the_users_files_is_never_a_run_directory(sanity, tmp_path):
    """issue 30 (2): `hydra.run.dir=.` in a project folder refused before anything is written; its files intact."""
    from test_run_dirs import checksums

    project = tmp_path / "proj"
    (project / ".hydra").mkdir(parents=True)
    for name in ("report.html", "summary.csv", "cli.log", "similarity.png", ".hydra/config.yaml"):
        (project / name).write_text(f"the user's own {name}")
    before = checksums(project)
    result = sanity("run", *CHEAP, "hydra.run.dir=.", cwd=project)
    assert_one_line_error(result, "already holds files that are not a sanity run", "pick a new or empty")
    assert checksums(project) == before
    assert sorted(p.name for p in project.rglob("*")) == sorted(
        ["report.html", "summary.csv", "cli.log", "similarity.png", ".hydra", "config.yaml"])


def test_an_early_failure_into_a_run_folder_leaves_nothing_that_blocks_the_fix(sanity, tmp_path):
    """issue 30 (4): a failure into an (empty) run directory removes what it added, so the corrected command runs."""
    folder = tmp_path / "run"
    folder.mkdir()
    failed = sanity("run", *CHEAP, "data.path=/nonexistent/mnist", f"hydra.run.dir={folder}")
    assert_one_line_error(failed, "does not exist")
    assert list(folder.iterdir()) == []
    fixed = sanity("run", *CHEAP, f"hydra.run.dir={folder}")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert (folder / "manifest.json").exists()


def test_nothing_left_to_explain_is_one_line(sanity, tmp_path):
    """issue 30 (1): every method skipped (Grad-CAM needs a conv layer; the MLP has none) is one line, exit 2."""
    result = sanity("run", "model=mnist_mlp", "method=[gradcam,guided_gradcam]", "n_images=2", "plots=false",
                    "train.epochs=1", "train.max_train_images=200")
    assert_one_line_error(result, "nothing to explain: gradcam, guided_gradcam need a conv layer",
                          "mnist_mlp has none")
    assert not (tmp_path / "results").exists() or not run_dirs(tmp_path)


def test_the_python_api_raises_the_same_line():
    from sanity_cli import check
    from sanity_cli.errors import SanityError
    from sanity_cli.models import linear

    model = linear((28, 28, 1))
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    with pytest.raises(SanityError, match="names gradient twice; list each method once"):
        check(model, x, methods=["gradient", "gradient"])
    with pytest.raises(SanityError, match="test.shift must be a non-zero number, got nan"):
        check(model, x, test="input_invariance", methods=["gradient"], **{"test.shift": float("nan")})


def test_report_on_a_run_killed_while_writing_says_how_to_finish_it(sanity, tmp_path):
    """issue 30 (6): `sanity report` on a run without its manifest (killed while writing) names it unfinished."""
    half = tmp_path / "half"
    (half / "units").mkdir(parents=True)
    (half / "verdict.csv").write_text("method,verdict\n")
    result = sanity("report", str(half))
    assert_one_line_error(result, "is an unfinished run (no manifest.json", "resume=true")
    assert sorted(p.name for p in half.iterdir()) == ["units", "verdict.csv"]
