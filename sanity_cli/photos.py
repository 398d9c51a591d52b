"""Photos for ImageNet models: a folder of images, or the embedded default (scikit-image's sample photos
plus ../shared/data/images when present), resized and centre-cropped to the model's input size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .data import Dataset
from .errors import SanityError
from .io import sha256_file

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SKIMAGE_SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")
SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def resize_center_crop(picture: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side of an RGB picture in [0, 1] to `size` (anti-aliased), then crop the centre square."""
    from skimage.transform import resize

    height, width = picture.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    picture = resize(picture, (new_h, new_w), anti_aliasing=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return picture[top:top + size, left:left + size].astype(np.float32)


def sample_rgb(picture: np.ndarray) -> np.ndarray:
    """A scikit-image sample photo (uint8, RGB or grayscale) as RGB in [0, 1]."""
    picture = np.asarray(picture, np.float64) / 255.0
    return np.stack([picture] * 3, axis=-1) if picture.ndim == 2 else picture[..., :3]


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode(path: Path, log=print) -> np.ndarray | None:
    """A photo file as RGB in [0, 1] (float64), through PIL's decoders and mode conversions, or None (with a
    warning naming the file) when it cannot be read. EXIF orientation is applied; CMYK and YCbCr go through PIL's
    colour conversion; 16-bit grayscale is divided by 65535 (not by its own maximum); grayscale becomes three equal
    channels; transparency (RGBA, LA, palette with transparency) is dropped, keeping the colour underneath, as
    keras.utils.load_img and torchvision's loader do. Every file whose mode was not already 8-bit RGB gets one log
    line saying what was done."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            rotated = image.size != opened.size or opened.getexif().get(0x0112, 1) not in (1, None)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        log(f"data: warning: skipping {path.name}: not a readable image ({type(err).__name__})")
        return None
    mode, done = image.mode, []
    if mode in SIXTEEN_BIT:
        gray = np.asarray(image, np.float64)
        if gray.min() < 0 or gray.max() > 65535:  # mode I holds 32-bit integers: no defined white
            log(f"data: warning: skipping {path.name}: {mode} image with values outside 0..65535")
            return None
        picture, done = np.stack([gray / 65535.0] * 3, axis=-1), [f"{mode} 16-bit grayscale / 65535 -> RGB"]
    elif mode in ("F", "LAB", "HSV"):
        log(f"data: warning: skipping {path.name}: mode {mode} has no conversion to RGB in [0, 1] here; save it "
            f"as RGB")
        return None
    else:
        if mode == "P" and "transparency" in image.info:
            image, done = image.convert("RGBA"), ["palette with transparency -> RGBA"]
        if image.mode != "RGB":
            what = {"RGBA": "alpha dropped", "LA": "alpha dropped", "CMYK": "PIL colour conversion",
                    "L": "gray in three channels", "1": "bilevel"}.get(image.mode, "PIL conversion")
            done.append(f"{image.mode} -> RGB ({what})")
            try:
                image = image.convert("RGB")
            except (ValueError, OSError) as err:
                log(f"data: warning: skipping {path.name}: cannot convert mode {image.mode} to RGB ({err})")
                return None
        picture = np.asarray(image, np.float64) / 255.0
    if rotated:
        done.append("EXIF orientation applied")
    if done:
        log(f"data: {path.name}: {'; '.join(done)}")
    return picture


def class_index(path: Path | None = None) -> list[str] | None:
    """ImageNet class names from imagenet_class_index.json (index -> [wnid, name]), if available."""
    path = path or SHARED_IMAGES / "imagenet_class_index.json"
    if not path.exists():
        return None
    table = json.loads(path.read_text())
    return [table[str(i)][1] for i in range(len(table))]


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
    """`data=images`: photos for ImageNet models (RGB, size x size, labels: ImageNet class indices from
    `data.labels_csv`), from a folder (load_folder), or by default scikit-image's sample photos plus
    ../shared/data/images when present."""
    if path:
        return load_folder(path, size, 3, labels_csv, max_images, log, name="images", class_names=class_index(),
                           subfolders=False)
    from skimage import data as samples

    pictures = [sample_rgb(getattr(samples, name)()) for name in SKIMAGE_SAMPLES]
    names = [f"skimage.data.{name}" for name in SKIMAGE_SAMPLES]
    if SHARED_IMAGES.is_dir():
        for file in sorted(p for p in SHARED_IMAGES.iterdir() if p.suffix.lower() in EXTENSIONS):
            picture = decode(file, log)
            if picture is not None:
                pictures.append(picture)
                names.append(file.name)
    if max_images:
        pictures, names = pictures[:max_images], names[:max_images]
    source = "embedded default: scikit-image sample photos" + (f" + {SHARED_IMAGES}" if SHARED_IMAGES.is_dir() else "")
    images = np.stack([resize_center_crop(p, size) for p in pictures])
    given = _labels(labels_csv)
    labels = np.array([given.get(n, -1) for n in names], np.int64)
    log(f"data: {len(images)} photos from {source}")
    provenance = {"source": "images", "path": source, "files": names, "sha256": None, "size": size,
                  "labels_csv": labels_csv}
    return _test_split("images", images, labels, class_index() or [str(i) for i in range(1000)], provenance)


def _test_split(name: str, images: np.ndarray, labels, class_names: list[str], provenance: dict) -> Dataset:
    """A Dataset whose test split holds the pictures; there is no training split."""
    empty = np.zeros((0,) + images.shape[1:], np.float32)
    return Dataset(name=name, x_train=empty, y_train=np.zeros(0, np.int64), x_test=images.astype(np.float32),
                   y_test=np.asarray(labels, np.int64), class_names=class_names, provenance=provenance)


def _listing(folder: Path, labels_csv: str | None, subfolders: bool) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, label) of every picture and the class folders: one subfolder per class (class index = their sorted
    order), or a flat folder with labels from labels_csv (file,label; -1 where none)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if subfolders else []
    if classes:
        return [(file, k) for k, name in enumerate(classes)
                for file in sorted((folder / name).iterdir()) if file.suffix.lower() in EXTENSIONS], classes
    given = _labels(labels_csv)
    return [(file, given.get(file.name, -1)) for file in sorted(folder.iterdir())
            if file.suffix.lower() in EXTENSIONS], []


def load_folder(path: str | None, size: int, channels: int = 3, labels_csv: str | None = None,
                max_images: int | None = None, log=print, *, name: str = "folder",
                class_names: list[str] | None = None, subfolders: bool = True) -> Dataset:
    """The one loader of a folder of pictures (`data=folder data.path=DIR`, and `data=images data.path=DIR`):
    one subfolder per class, or a flat folder of images with optional labels from `data.labels_csv` (file,label;
    unlabelled images are explained for the model's top-1). Images are decoded by PIL (decode), scaled and
    centre-cropped to `size`, and made grayscale when the model takes one channel. The test split holds them all."""
    if not path:
        raise SanityError("data=folder needs the images' folder: data.path=DIR (one subfolder per class, or flat)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SanityError(f"data.path {folder} is not a directory; point it at a folder of images")
    files, classes = _listing(folder, labels_csv, subfolders)
    if not files:
        where = " in it or in its subfolders" if subfolders else ""
        raise SanityError(f"data.path {folder} holds no images ({', '.join(sorted(EXTENSIONS))}){where}")
    pictures, labels, names, digests = [], [], [], []
    for file, label in files:
        if max_images and len(pictures) == max_images:
            break
        picture = decode(file, log)
        if picture is None:
            continue
        picture = resize_center_crop(picture, size)
        pictures.append(picture.mean(axis=-1, keepdims=True) if channels == 1 else picture)
        labels.append(label)
        names.append(str(file.relative_to(folder)))
        digests.append(sha256_file(file))
    if not pictures:
        raise SanityError(f"data.path {folder} holds no readable image (every file was skipped, see the warnings); "
                          f"add pictures PIL can read")
    log(f"data: {len(pictures)} {'photos' if name == 'images' else 'images'} from {folder}"
        + (f" in {len(classes)} class folders" if classes else ""))
    provenance = {"source": name, "path": str(folder.resolve()), "files": names, "sha256": digests,
                  "size": size, "labels_csv": labels_csv, "classes": classes or None}
    return _test_split(name, np.stack(pictures), labels,
                       class_names or classes or [str(k) for k in range(max(max(labels) + 1, 1))], provenance)
