"""Checks of an image file made from its header, before its voxels are read.

ITK reads a NIfTI file that ends early with the missing voxels set to 0, so a truncated
download or copy would be encoded as if it were complete. :func:`inspect_image_file` reads
only the header (size, voxel type, where the voxel data lives and how it is encoded), then

* refuses images with more voxels than :func:`max_voxels` (a header can promise gigabytes in
  a file of a few kilobytes), before anything is allocated;
* compares the voxel bytes the header promises with what the file holds: the file size for
  raw data, a streamed decompression (bounded memory, stopped at the promised size) for
  gzip, zlib and bzip2 data. NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr`` +
  detached data), MetaImage (``.mha``, ``.mhd`` + ``.raw``) are checked; other formats
  (DICOM) are left to their readers;
* counts NaN/infinite voxels of floating-point NIfTI data in the same pass (ITK's NIfTI
  reader turns them into 0).

Errors are :class:`~AttriVAELib.core.errors.InputError` with one line naming the file.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import stat
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from AttriVAELib.core.errors import ConfigError, InputError

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_VOXELS_ENV", "ImageFileInfo", "check_regular_file", "check_voxel_count",
           "inspect_image_file", "max_voxels"]

#: Largest image read by default, in voxels: 512 × 512 × 1024 (1 GiB as float32).
DEFAULT_MAX_VOXELS = 512 * 512 * 1024
#: Environment variable that raises (or lowers) the limit; ``attrivae --max-voxels N`` sets it.
MAX_VOXELS_ENV = "ATTRIVAE_MAX_VOXELS"

_CHUNK = 8 << 20


def max_voxels() -> int:
    """The voxel limit: ``$ATTRIVAE_MAX_VOXELS`` if set, else :data:`DEFAULT_MAX_VOXELS`."""
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except (ValueError, OverflowError):
        raise ConfigError(f"{MAX_VOXELS_ENV}={text!r} is not a whole number of voxels") from None
    if value < 1:
        raise ConfigError(f"{MAX_VOXELS_ENV}={text!r} must be at least 1")
    return value


@dataclass
class ImageFileInfo:
    """What the header says: size (x, y, z[, t]), bytes per voxel and the data check's findings."""

    size: tuple[int, ...]
    components: int
    nonfinite: int = 0  # NaN/inf voxels found in floating-point NIfTI data (0 if not counted)


def check_regular_file(path: Path, what: str = "image") -> None:
    """A FIFO, socket or device would block or never end: only regular files are read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
        raise InputError(f"{path}: is {kind}, not a regular {what} file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read {what} (permission denied)")


def check_voxel_count(path: Path | str, size: tuple[int, ...]) -> None:
    """Refuse an image whose header promises more than :func:`max_voxels` voxels."""
    count = math.prod(int(s) for s in size)
    limit = max_voxels()
    if count > limit:
        dims = " × ".join(str(int(s)) for s in size)
        raise InputError(f"{path}: image of {dims} = {count:,} voxels is larger than the limit of {limit:,}; "
                         f"raise it with --max-voxels or {MAX_VOXELS_ENV} if the image is genuine")


# --------------------------------------------------------------------------- streams
def _count_stream(read: Callable[[int], bytes], skip: int, expected: int,
                  on_data: Callable[[bytes], None] | None = None) -> int:
    """Bytes available after ``skip`` (at most ``expected`` + 1 are read)."""
    pos = 0
    got = 0
    while got <= expected:
        block = read(_CHUNK)
        if not block:
            break
        start = max(0, skip - pos)
        pos += len(block)
        if start >= len(block):
            continue
        data = block[start:start + expected - got + 1]
        if on_data is not None:
            on_data(data[:max(0, expected - got)])
        got += len(data)
    return got


def _zlib_reader(fh: BinaryIO) -> Callable[[int], bytes]:
    """A read() over a zlib or gzip stream (MetaImage ``CompressedData``); raises EOFError if it ends early."""
    inflater = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, detected

    def read(n: int) -> bytes:
        while True:
            if inflater.eof:
                return b""
            raw = inflater.unconsumed_tail or fh.read(1 << 20)
            if not raw:
                raise EOFError("compressed stream ended before its end marker")
            out = inflater.decompress(raw, n)
            if out:
                return out

    return read


def _measure(path: Path, data_path: Path, encoding: str, skip: int, expected: int,
             on_data: Callable[[bytes], None] | None = None) -> tuple[int, str]:
    """(bytes found, how) for voxel data of ``expected`` bytes after ``skip`` bytes of ``data_path``."""
    try:
        if encoding == "raw":
            if on_data is None:
                return max(0, min(os.path.getsize(data_path) - skip, expected + 1)), "raw"
            with open(data_path, "rb") as fh:
                fh.seek(skip)
                return _count_stream(fh.read, 0, expected, on_data), "raw"
        with open(data_path, "rb") as fh:
            if encoding == "gzip":
                fh.seek(skip)
                stream = gzip.GzipFile(fileobj=fh)
                return _count_stream(stream.read, 0, expected, on_data), "gzip"
            if encoding == "gzip-all":  # the whole file is gzip (.nii.gz): skip counts decompressed bytes
                stream = gzip.GzipFile(fileobj=fh)
                return _count_stream(stream.read, skip, expected, on_data), "gzip"
            if encoding == "bzip2":
                fh.seek(skip)
                return _count_stream(bz2.BZ2File(fh).read, 0, expected, on_data), "bzip2"
            if encoding == "zlib":
                fh.seek(skip)
                return _count_stream(_zlib_reader(fh), 0, expected, on_data), "zlib"
    except EOFError:
        raise InputError(f"{path}: file is truncated (its compressed voxel data ends early)") from None
    except (OSError, zlib.error, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputError(f"{path}: voxel data file {data_path} not found") from None
        detail = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"{path}: cannot read image (corrupt compressed voxel data: {detail})") from None
    raise AssertionError(encoding)  # pragma: no cover


def _require(path: Path, found: int, expected: int, how: str) -> None:
    if found < expected:
        raise InputError(f"{path}: file is truncated: its header promises {expected:,} bytes of voxel data, "
                         f"the file holds {found:,}{'' if how == 'raw' else f' (after {how} decompression)'}")


# --------------------------------------------------------------------------- NIfTI
def _nifti(path: Path, voxels: int) -> int:
    """Check a NIfTI file's data length; return its number of NaN/inf voxels (float data)."""
    import nibabel

    try:
        image = nibabel.load(str(path))
        header = image.header
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
        shape = tuple(int(s) for s in image.shape)
    except Exception:  # not parseable by nibabel: ITK decides, once a gzip stream is known to be whole
        if path.name.lower().endswith(".gz"):
            _measure(path, path, "gzip-all", 0, sys.maxsize)  # a stream cut short raises "truncated"
        return 0
    expected = math.prod(shape) * dtype.itemsize
    if math.prod(shape) != voxels:  # ITK and nibabel disagree on the grid: leave it to ITK
        return 0
    counter = _NonFinite(dtype) if np.issubdtype(dtype.base, np.floating) and dtype.fields is None else None
    gz = path.name.lower().endswith(".gz")
    found, how = _measure(path, path, "gzip-all" if gz else "raw", offset, expected,
                          counter.feed if counter is not None else None)
    _require(path, found, expected, how)
    return counter.count if counter is not None else 0


class _NonFinite:
    """Counts non-finite values in a byte stream of ``dtype`` (chunks may split values)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.rest = b""
        self.count = 0

    def feed(self, data: bytes) -> None:
        data = self.rest + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self.rest = data[usable:]
        if usable:
            values = np.frombuffer(data, dtype=self.dtype, count=usable // self.dtype.itemsize)
            self.count += int(values.size - np.count_nonzero(np.isfinite(values)))


# --------------------------------------------------------------------------- MetaImage
_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _header_lines(path: Path, limit: int = 1 << 20) -> Iterator[tuple[str, int]]:
    """(line, offset after it) of a text header, read line by line (at most ``limit`` bytes)."""
    with open(path, "rb") as fh:
        pos = 0
        while pos < limit:
            raw = fh.readline(64 * 1024)
            if not raw:
                return
            pos += len(raw)
            yield raw.decode("latin-1").rstrip("\r\n"), pos


def _metaimage(path: Path, voxels: int, components: int) -> None:
    fields: dict[str, str] = {}
    data_offset = None
    for line, end in _header_lines(path):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        fields[key] = value
        if key == "ElementDataFile":
            data_offset = end
            break
    if data_offset is None or fields.get("ElementType") not in _MET_SIZES:
        return
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        data_path, skip = path, data_offset
    elif data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return  # several files: left to the reader
    else:
        data_path, skip = (path.parent / data_file), 0
        check_regular_file(data_path, "voxel data")
    try:
        header_size = int(fields.get("HeaderSize", "0"))
    except ValueError:
        return
    if header_size == -1:
        return  # "data at the end of the file": nothing to compare
    if data_path != path:
        skip = max(0, header_size)
    compressed = fields.get("CompressedData", "False").lower() in ("true", "1")
    expected = voxels * components * _MET_SIZES[fields["ElementType"]]
    found, how = _measure(path, data_path, "zlib" if compressed else "raw", skip, expected)
    _require(path, found, expected, how)


# --------------------------------------------------------------------------- NRRD
_NRRD_SIZES: dict[str, int] = {}
for _names, _size in ((("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
                      (("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                        "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
                      (("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                        "float"), 4),
                      (("longlong", "long long", "long long int", "signed long long", "signed long long int",
                        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int",
                        "uint64", "uint64_t", "double"), 8)):
    for _name in _names:
        _NRRD_SIZES[_name] = _size
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def _nrrd(path: Path) -> None:
    fields: dict[str, str] = {}
    data_offset = None
    for index, (line, end) in enumerate(_header_lines(path)):
        if index == 0:
            if not line.startswith("NRRD"):
                return
            continue
        if not line.strip():
            data_offset = end
            break
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        itemsize = _NRRD_SIZES[fields["type"].lower()]
    except (KeyError, ValueError):
        return
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "raw").lower())
    if encoding is None:
        return  # text or hex: the reader checks it
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if data_file.upper().startswith("LIST") or "%" in data_file or len(data_file.split()) > 1:
            return
        data_path = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        check_regular_file(data_path, "voxel data")
        skip = 0
    elif data_offset is None:
        raise InputError(f"{path}: file is truncated (it ends inside its header)")
    else:
        data_path, skip = path, data_offset
    try:
        byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
        line_skip = int(fields.get("line skip", fields.get("lineskip", "0")))
    except ValueError:
        return
    if byte_skip < 0 or line_skip:
        return
    expected = math.prod(sizes) * itemsize
    if encoding == "raw":
        skip += byte_skip
    found, how = _measure(path, data_path, encoding, skip, expected)
    _require(path, found, expected, how)


# --------------------------------------------------------------------------- entry point
def inspect_image_file(path: str | os.PathLike) -> ImageFileInfo:
    """Check an image file from its header before it is read (see the module docstring).

    Raises:
        InputError: not a regular file, unreadable header, more voxels than the limit, or a
            file shorter than its header promises.
    """
    import SimpleITK as sitk

    path = Path(path)
    check_regular_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in lines if "ERROR" in ln or "Could not" in ln), "not a readable image")
        raise InputError(f"{path}: cannot read image ({detail[:160]})") from None
    size = tuple(int(s) for s in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    check_voxel_count(path, size)
    voxels = math.prod(size)
    name = path.name.lower()
    info = ImageFileInfo(size=size, components=components)
    if name.endswith((".nii", ".nii.gz")):
        info.nonfinite = _nifti(path, voxels * components)
    elif name.endswith((".mha", ".mhd")):
        _metaimage(path, voxels, components)
    elif name.endswith((".nrrd", ".nhdr")):
        _nrrd(path)
    return info
