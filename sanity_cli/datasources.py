"""The data-source registry (config group `data`): every source of images sanity reads, keyed by its config name,
each declaring the parameters of its config node, which architectures' data it is (digits, photos, or any) and
how it is loaded. No other module decides a data source's behaviour from its name. TensorFlow-free until a
loader runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .errors import SanityError
from .params import Choice, Int, Param, PathValue, Text

SOURCES = ("auto", "tfds", "idx", "bundled")


def _exists(kind: str, wrong: str) -> Callable[[Mapping], None]:
    """A check that data.path is a file (kind 'file') or a folder ('dir')."""
    def check(values: Mapping) -> None:
        path = Path(values["path"]).expanduser()
        if not (path.is_file() if kind == "file" else path.is_dir()):
            raise SanityError(f"data.path {values['path']} {wrong}")
    return check


def _digits(values: Mapping, name: str, image_shape, log):
    from .data import load_dataset

    return load_dataset(name, values["source"], path=values["path"], data_dir=values["data_dir"], log=log)


def _photos(values: Mapping, name: str, image_shape, log):
    from .photos import load_photos

    return load_photos(values["path"], size=values["size"], max_images=values["max_images"],
                       labels_csv=values["labels_csv"], log=log)


def _folder(values: Mapping, name: str, image_shape, log):
    from .photos import load_folder

    return load_folder(values["path"], size=values["size"] or image_shape[0], channels=image_shape[2],
                       labels_csv=values["labels_csv"], max_images=values["max_images"], log=log)


def _npz(values: Mapping, name: str, image_shape, log):
    from .data import load_npz

    return load_npz(values["path"], log=log)


def _tfds(values: Mapping, name: str, image_shape, log):
    from .data import load_tfds_images

    return load_tfds_images(values["name"], values["data_dir"], values["train_split"], values["test_split"], log=log)


@dataclass(frozen=True)
class DataSource:
    name: str
    kind: str                                   # digits | photos | any (its images' shape is checked once loaded)
    params: Mapping[str, Param]
    loader: Callable                            # (values, name, the model's input shape, log) -> data.Dataset
    check: Callable[[Mapping], None] | None = None  # what can be checked before loading (the path exists)

    def data_name(self, values: Mapping) -> str:
        """The name the architectures check their data against: a tfds copy of MNIST is MNIST."""
        if self.name == "tfds":
            return values["name"] if values["name"] in ("mnist", "fashion_mnist") else "tfds"
        return self.name

    def load(self, values: Mapping, image_shape, log):
        return self.loader(values, self.data_name(values), image_shape, log)


DIGITS = {"source": Choice("auto", SOURCES), "path": PathValue(), "data_dir": PathValue()}
PICTURES = {"path": PathValue(), "labels_csv": PathValue(), "max_images": Int(None, low=1, nullable=True)}

SOURCES_BY_NAME = {source.name: source for source in (
    DataSource("mnist", "digits", DIGITS, lambda v, n, s, log: _digits(v, "mnist", s, log)),
    DataSource("fashion_mnist", "digits", DIGITS, lambda v, n, s, log: _digits(v, "fashion_mnist", s, log)),
    DataSource("images", "photos", {**PICTURES, "size": Int(299, low=1)}, _photos),
    DataSource("folder", "any", {**PICTURES, "size": Int(None, low=1, nullable=True),
                                 "path": PathValue(missing="data=folder needs the images' folder: data.path=DIR (one "
                                                           "subfolder per class, or flat)")},
               _folder, _exists("dir", "is not a directory; point it at a folder of images")),
    DataSource("npz", "any", {"path": PathValue(missing="data=npz needs the arrays file: data.path=FILE.npz (x_test, "
                                                        "y_test[, x_train, y_train])")},
               _npz, _exists("file", "is not a file; give the .npz file")),
    DataSource("tfds", "any", {"name": Text(missing="data=tfds needs the data set's tfds name: data.name=NAME (e.g. "
                                                    "cifar10)"),
                               "data_dir": PathValue(), "train_split": Text("train"), "test_split": Text("test")},
               _tfds),
)}


def key_of(node: Mapping) -> str:
    """The registry key of a `data` config node: data=tfds names the tfds data set in `name` (its `kind` is tfds)."""
    return "tfds" if node.get("kind") == "tfds" else str(node.get("name"))


def get(name: str) -> DataSource:
    if name not in SOURCES_BY_NAME:
        raise SanityError(f"unknown data '{name}'; choose from {', '.join(SOURCES_BY_NAME)} (data=NAME)")
    return SOURCES_BY_NAME[name]
