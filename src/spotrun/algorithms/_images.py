"""Reading the ``image-classification`` channels: ``.npz`` arrays or class folders of
images, checked and turned into one float32 N x C x H x W tensor with integer labels.

Every problem with the data is an ``AlgorithmError`` naming the channel, the file and what
is wrong. Pillow is imported only when image folders are read, so ``.npz`` data needs only
numpy and torch.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError, data_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_SIDE = 4  # the network's two 2x2 max-pools need at least this
#: ContentTypes that name data this algorithm cannot read (anything else: look at files)
REFUSED_TYPES = ("text/csv", "application/x-recordio", "application/x-recordio-protobuf")

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ImageSet:
    """One channel's images (float32, N x C x H x W) and labels; ``classes`` are the
    folder names in label order when the folders were named rather than numbered."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


def load_channel(
    env: AlgorithmEnv,
    channel: str,
    num_classes: int,
    image_shape: tuple[int, int, int] | None,
    classes: tuple[str, ...] | None = None,
    required: bool = True,
    numbered: bool = False,
) -> ImageSet | None:
    """A channel's images and labels (None if it is optional and absent).

    ``image_shape`` is the shape every image must have (npz) or is resized to (folders);
    ``classes`` are the training channel's class folder names, which a validation channel
    must use too; ``numbered``: the training labels are plain numbers (npz, or folders
    named 0, 1, ...), so class folders here must be numbered too, or the same class would
    get two different labels.
    """
    folder = env.channel(channel, required)
    listing = env.channel(f"{channel}_lst", required=False)
    if folder is None:
        if listing is not None:
            raise AlgorithmError(
                f"the {channel}_lst channel needs the {channel} channel, which holds the "
                "images its .lst files name"
            )
        return None
    kind = env.content_type(channel)
    if kind in REFUSED_TYPES:
        raise AlgorithmError(
            f"{channel} channel: ContentType {kind} is not supported; "
            "use .npz files or folders of .png/.jpg images"
        )
    if listing is not None:
        return _checked(
            read_lst(folder, listing, channel, num_classes, image_shape), channel, image_shape
        )
    files = data_files(folder)
    arrays = [f for f in files if f.suffix.lower() == ".npz"]
    pictures = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if arrays and pictures:
        raise AlgorithmError(f"{channel} channel: holds both .npz files and images; use one")
    if arrays:
        found = read_npz(arrays, channel, num_classes, image_shape)
    elif pictures:
        found = read_folders(folder, pictures, channel, num_classes, image_shape, classes, numbered)
    else:
        raise AlgorithmError(
            f"the {channel} channel holds no .npz files and no <class>/*.png|jpg images"
        )
    return _checked(found, channel, image_shape)


def _checked(found: ImageSet, channel: str, image_shape: tuple[int, int, int] | None) -> ImageSet:
    if image_shape is not None and found.shape != image_shape:
        raise AlgorithmError(
            f"{channel} channel: images are {shape_text(found.shape)} (channels,height,width),"
            f" expected {shape_text(image_shape)} (image_shape, or the train channel's)"
        )
    if min(found.shape[1:]) < MIN_SIDE:
        raise AlgorithmError(
            f"{channel} channel: images of {shape_text(found.shape)} are too small: "
            f"height and width must be at least {MIN_SIDE}"
        )
    return found


def shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(s) for s in shape)


def read_npz(
    files: Sequence[Path], channel: str, num_classes: int, image_shape: tuple[int, int, int] | None
) -> ImageSet:
    """Arrays ``images`` and ``labels`` from each file, joined in file order."""
    images: list[Array] = []
    labels: list[Array] = []
    for path in files:
        where = f"{channel} channel: {path.name}"
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy under an .npz name
                raise AlgorithmError(
                    f"{where} holds a single array, not an .npz archive of "
                    "'images' and 'labels' (write it with numpy.savez)"
                )
            with loaded as data:
                missing = {"images", "labels"} - set(data.files)
                if missing:
                    raise AlgorithmError(
                        f"{where} has no array {' or '.join(sorted(missing))} "
                        f"(it has {', '.join(data.files) or 'none'})"
                    )
                raw_images, raw_labels = data["images"], data["labels"]
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise AlgorithmError(f"{where} is not a readable .npz file: {e}") from None
        block = _to_nchw(raw_images, image_shape, where)
        if images and block.shape[1:] != images[0].shape[1:]:
            raise AlgorithmError(
                f"{where}: images are {shape_text(block.shape[1:])}, "
                f"unlike {shape_text(images[0].shape[1:])} in {files[0].name}"
            )
        images.append(block)
        labels.append(_check_labels(raw_labels, len(block), num_classes, where))
    return ImageSet(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    )


def _to_nchw(array: Array, image_shape: tuple[int, int, int] | None, where: str) -> Array:
    if array.dtype.kind not in "biuf":  # bool, signed, unsigned, float
        raise AlgorithmError(f"{where}: images must be numbers, not {array.dtype}")
    if array.ndim == 3:
        out = array[:, None]
    elif array.ndim == 4:
        nchw, nhwc = array.shape[1:], (array.shape[3], *array.shape[1:3])
        if image_shape is not None:
            channels_last = nchw != image_shape and nhwc == image_shape
        else:
            # torch's (and image_shape's) order wins a tie
            channels_last = not 1 <= array.shape[1] <= 4 and 1 <= array.shape[3] <= 4
        out = array.transpose(0, 3, 1, 2) if channels_last else array
    else:
        raise AlgorithmError(
            f"{where}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got {array.shape}"
        )
    if len(out) == 0:
        raise AlgorithmError(f"{where}: holds no images")
    result = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(result).all():
        raise AlgorithmError(f"{where}: images hold NaN or infinite values")
    return result


def _check_labels(raw: Array, count: int, num_classes: int, where: str) -> Array:
    if raw.ndim != 1 or len(raw) != count:
        raise AlgorithmError(f"{where}: labels must be {count} numbers, got shape {raw.shape}")
    if raw.dtype.kind not in "iuf":
        raise AlgorithmError(f"{where}: labels must be numbers, not {raw.dtype}")
    ok = np.isfinite(raw) & (raw == np.round(raw)) & (raw >= 0) & (raw < num_classes)
    if not ok.all():
        bad = raw[~ok][0]
        raise AlgorithmError(
            f"{where}: labels must be integers 0..{num_classes - 1} (num_classes), found {bad}"
        )
    return raw.astype(np.int64)


def read_folders(
    folder: Path,
    files: Sequence[Path],
    channel: str,
    num_classes: int,
    image_shape: tuple[int, int, int] | None,
    classes: tuple[str, ...] | None,
    numbered: bool = False,
) -> ImageSet:
    """Images under ``<channel>/<class>/`` with Pillow, converted to grayscale (1 channel)
    or RGB (3) and resized to ``image_shape`` when one is given."""
    Image = _pillow(channel)
    for path in files:
        if len(path.relative_to(folder).parts) != 2:
            raise AlgorithmError(
                f"{channel} channel: {path.relative_to(folder)} is not in a class folder "
                f"(images go in {channel}/<class>/)"
            )
    names = sorted({p.parent.name for p in files})
    if numbered and not all(n.isdigit() for n in names):
        odd = next(n for n in names if not n.isdigit())
        raise AlgorithmError(
            f"{channel} channel: class folder {odd!r} has a name, but the train channel's "
            f"labels are numbers: name the folders 0..{num_classes - 1} here too"
        )
    index = _class_index(names, num_classes, channel, classes)
    mode = {1: "L", 3: "RGB"}.get(image_shape[0]) if image_shape else None
    if image_shape is not None and mode is None:
        raise AlgorithmError(
            f"image_shape {shape_text(image_shape)}: image folders give 1 (grayscale) "
            "or 3 (RGB) channels"
        )
    names = [f"{channel} channel: {p.relative_to(folder)}" for p in files]
    pixels = read_pictures(Image, files, names, image_shape, mode)
    labels = np.array([index[p.parent.name] for p in files], dtype=np.int64)
    named = classes
    if named is None and not all(n.isdigit() for n in index):
        named = tuple(sorted(index, key=index.__getitem__))
    return ImageSet(torch.from_numpy(pixels), torch.from_numpy(labels), named)


def read_pictures(
    image: Any,
    files: Sequence[Path],
    names: Sequence[str],
    image_shape: tuple[int, int, int] | None,
    mode: str | None,
) -> Array:
    """The images ``files`` as one float32 N x C x H x W array, in ``mode`` (None:
    grayscale or RGB as the first image is) and resized to ``image_shape`` when one is
    given. ``names`` say where each file is in error messages; ``image`` is Pillow's
    ``Image`` module."""
    size = (image_shape[2], image_shape[1]) if image_shape else None  # Pillow: (w, h)
    images: list[Array] = []
    for path, name in zip(files, names, strict=True):
        try:
            with image.open(path) as picture:
                if mode is None:
                    gray = picture.mode in ("1", "L", "LA", "I", "I;16", "F")
                    mode = "L" if gray else "RGB"
                converted = picture.convert(mode)
                if size is None:
                    size = converted.size
                elif converted.size != size and image_shape is None:
                    raise AlgorithmError(
                        f"{name} is {converted.size[0]}x{converted.size[1]}, unlike the first "
                        f"image ({size[0]}x{size[1]}); set image_shape to resize them all"
                    )
                elif converted.size != size:
                    converted = converted.resize(size, image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.float32)
        except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as e:
            # Pillow raises SyntaxError for some broken files, and DecompressionBombError
            # for images far beyond its pixel limit
            raise AlgorithmError(f"{name} is not a readable image: {e}") from None
        images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    return np.stack(images)


def _pillow(channel: str) -> Any:
    """Pillow's ``Image`` module, or an ``AlgorithmError`` saying it is missing."""
    try:
        from PIL import Image
    except ImportError:  # only image files need Pillow; npz data does not
        raise AlgorithmError(
            f"{channel} channel: reading image folders needs Pillow (pip install pillow)"
        ) from None
    return Image


def read_lst(
    folder: Path,
    listing: Path,
    channel: str,
    num_classes: int,
    image_shape: tuple[int, int, int] | None,
) -> ImageSet:
    """SageMaker's "image format": the ``.lst`` files of channel ``<channel>_lst`` (in
    name order), each line ``index<TAB>label<TAB>path``, the path relative to the
    ``channel`` folder; the images in the order the lines list them."""
    lst_channel = f"{channel}_lst"
    lists = [p for p in data_files(listing) if p.suffix.lower() == ".lst"]
    if not lists:
        raise AlgorithmError(
            f"the {lst_channel} channel holds no .lst file (lines index<TAB>label<TAB>path)"
        )
    Image = _pillow(channel)
    mode = {1: "L", 3: "RGB"}.get(image_shape[0]) if image_shape else None
    if image_shape is not None and mode is None:
        raise AlgorithmError(
            f"image_shape {shape_text(image_shape)}: .lst images give 1 (grayscale) "
            "or 3 (RGB) channels"
        )
    root = folder.resolve()
    files: list[Path] = []
    names: list[str] = []
    labels: list[int] = []
    indexes: dict[str, str] = {}
    for lst in lists:
        try:
            text = lst.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AlgorithmError(
                f"{lst_channel} channel: {lst.name} is not readable text: {e}"
            ) from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{lst_channel} channel: {lst.name} line {number}"
            index, label, relative = _lst_fields(line, where, num_classes)
            if index in indexes:
                raise AlgorithmError(
                    f"{where}: image index {index} is used already ({indexes[index]})"
                )
            indexes[index] = f"{lst.name} line {number}"
            path = (folder / relative).resolve()
            if not path.is_relative_to(root):
                raise AlgorithmError(f"{where}: {relative} is outside the {channel} channel")
            if not path.is_file():
                raise AlgorithmError(f"{where}: image {relative} is not in the {channel} channel")
            files.append(path)
            names.append(f"{channel} channel: {relative} ({where})")
            labels.append(label)
    if not files:
        raise AlgorithmError(f"the {lst_channel} channel's .lst files list no images")
    pixels = read_pictures(Image, files, names, image_shape, mode)
    return ImageSet(torch.from_numpy(pixels), torch.tensor(labels, dtype=torch.int64))


def _lst_fields(line: str, where: str, num_classes: int) -> tuple[str, int, str]:
    """(index, label, relative path) of one ``.lst`` line."""
    fields = line.split("\t")
    if len(fields) == 1:  # written with spaces, as the documentation's example shows it
        fields = line.split(None, 2)
    fields = [f.strip() for f in fields]
    if len(fields) > 3:
        raise AlgorithmError(
            f"{where}: {len(fields) - 2} labels; one label per image is supported "
            "(multi_label is not)"
        )
    if len(fields) != 3 or not all(fields):
        raise AlgorithmError(
            f"{where}: expected index<TAB>label<TAB>relative/path, got {line.strip()!r}"
        )
    index, label, relative = fields
    try:
        number = float(index)
        whole = number.is_integer()
    except ValueError:
        whole = False
    if not whole:
        raise AlgorithmError(f"{where}: the image index {index!r} is not a whole number")
    try:
        value = float(label)  # im2rec writes labels as floats, e.g. 3.000000
    except ValueError:
        raise AlgorithmError(f"{where}: the label {label!r} is not a number") from None
    if not (value.is_integer() and 0 <= value < num_classes):
        raise AlgorithmError(
            f"{where}: the label {label} is not an integer 0..{num_classes - 1} (num_classes)"
        )
    return str(int(number)), int(value), relative


def _class_index(
    names: list[str], num_classes: int, channel: str, classes: tuple[str, ...] | None
) -> dict[str, int]:
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise AlgorithmError(
                f"{channel} channel: class folder {unknown[0]!r} is not a class of the "
                f"train channel ({', '.join(classes)})"
            )
        return {n: classes.index(n) for n in names}
    if all(n.isdigit() for n in names):
        index = {n: int(n) for n in names}
        too_big = [n for n in names if index[n] >= num_classes]
        if too_big:
            raise AlgorithmError(
                f"{channel} channel: class folder {too_big[0]} is not below "
                f"num_classes={num_classes}"
            )
        return index
    if len(names) > num_classes:
        raise AlgorithmError(
            f"{channel} channel: {len(names)} class folders but num_classes={num_classes}"
        )
    return {n: i for i, n in enumerate(names)}
