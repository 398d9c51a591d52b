"""Photos for ImageNet models: a folder of images, or the embedded default (scikit-image's sample photos
plus ../shared/data/images when present), resized and centre-cropped to the model's input size."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from .data import Dataset
from .errors import SanityError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SKIMAGE_SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")
SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def resize_center_crop(picture: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side to `size` (anti-aliased), then crop the centre square; returns float [0,1] RGB."""
    from skimage.transform import resize

    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.stack([picture] * 3, axis=-1)
    if picture.ndim != 3 or picture.shape[-1] not in (3, 4):
        raise SanityError(f"a photo has shape {picture.shape}; expected an RGB or grayscale image")
    picture = picture[..., :3]
    picture = picture.astype(np.float64) / (255.0 if picture.dtype == np.uint8 else max(1.0, picture.max()))
    height, width = picture.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    picture = resize(picture, (new_h, new_w), anti_aliasing=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return picture[top:top + size, left:left + size].astype(np.float32)


def class_index(path: Path | None = None) -> list[str] | None:
    """ImageNet class names from imagenet_class_index.json (index -> [wnid, name]), if available."""
    path = path or SHARED_IMAGES / "imagenet_class_index.json"
    if not path.exists():
        return None
    table = json.loads(path.read_text())
    return [table[str(i)][1] for i in range(len(table))]


def _read(path: Path) -> np.ndarray:
    from skimage import io

    try:
        return io.imread(path)
    except Exception as err:  # unreadable or not an image
        raise SanityError(f"cannot read image {path} ({type(err).__name__}); remove it from data.path") from None


def _labels(labels_csv: str | None) -> dict[str, int]:
    if not labels_csv:
        return {}
    path = Path(labels_csv).expanduser()
    if not path.exists():
        raise SanityError(f"data.labels_csv {path} does not exist; give a CSV with columns file,label")
    with open(path, newline="") as handle:
        try:
            return {row["file"]: int(row["label"]) for row in csv.DictReader(handle)}
        except (KeyError, ValueError):
            raise SanityError(f"data.labels_csv {path} needs columns file,label with integer labels") from None


def load_photos(path: str | None, size: int = 299, max_images: int | None = None, labels_csv: str | None = None,
                log=print) -> Dataset:
    """Photos as a Dataset whose test split holds the images (float32 (N,size,size,3) in [0,1])."""
    pictures, names, digests = [], [], []
    if path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise SanityError(f"data.path {folder} is not a directory; point it at a folder of photos")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise SanityError(f"data.path {folder} holds no images ({', '.join(sorted(EXTENSIONS))})")
        for file in files[:max_images]:
            pictures.append(_read(file))
            names.append(file.name)
            digests.append(hashlib.sha256(file.read_bytes()).hexdigest())
        source = str(folder)
    else:
        from skimage import data as samples

        for name in SKIMAGE_SAMPLES:
            pictures.append(getattr(samples, name)())
            names.append(f"skimage.data.{name}")
        if SHARED_IMAGES.is_dir():
            for file in sorted(p for p in SHARED_IMAGES.iterdir() if p.suffix.lower() in EXTENSIONS):
                pictures.append(_read(file))
                names.append(file.name)
        if max_images:
            pictures, names = pictures[:max_images], names[:max_images]
        source = "embedded default: scikit-image sample photos" + (
            f" + {SHARED_IMAGES}" if SHARED_IMAGES.is_dir() else "")
    images = np.stack([resize_center_crop(p, size) for p in pictures])
    given = _labels(labels_csv)
    labels = np.array([given.get(n, -1) for n in names], np.int64)
    names_table = class_index() or [str(i) for i in range(1000)]
    log(f"data: {len(images)} photos from {source}")
    provenance = {"source": "images", "path": source, "files": names, "sha256": digests or None,
                  "size": size, "labels_csv": labels_csv}
    empty = np.zeros((0,) + images.shape[1:], np.float32)
    return Dataset(name="images", x_train=empty, y_train=np.zeros(0, np.int64), x_test=images, y_test=labels,
                   class_names=names_table, provenance=provenance)
