"""Safetensors in and out, one tensor at a time.

Reading uses positional reads (os.preadv) into freshly allocated tensors rather than
mmap: a mapping that stays open keeps every page it ever touched in the process's
resident set, so streaming a model through one would make peak RSS grow to the model's
size. Positional reads are also safe to issue from a prefetch thread and a writer
thread at once.

Writing builds each shard in `<name>.tmp`, fsyncs it and renames it into place, so a
crash never leaves a truncated shard under its final name. Tensors are written either
from memory or copied byte for byte from an input file (os.copy_file_range), so
untouched tensors never pass through Python memory.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import torch

from ..errors import InputError
from ..files import atomic_write, atomic_write_json, write_fd

__all__ = ["Checkpoint", "RawTensor", "RowGather", "TensorInfo", "safetensors_filler", "write_index",
           "write_safetensors"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                     ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple
    path: Path
    start: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class RawTensor:
    """A tensor to copy unchanged from an input checkpoint into an output shard."""

    checkpoint: Checkpoint
    name: str


@dataclass(frozen=True, eq=False)
class RowGather:
    """Rows `rows` (sorted, unique int64) of an input tensor, written in order without ever holding the
    whole tensor: read and written `chunk_rows` rows at a time (the vocabulary trim)."""

    checkpoint: Checkpoint
    name: str
    rows: torch.Tensor
    chunk_rows: int = 8192


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header: every tensor must lie inside the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise InputError(f"{path} is not a safetensors file (only {size} bytes)")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise InputError(f"{path} is corrupt or truncated: header length {hlen} does not fit a "
                                 f"{size}-byte file")
            header = json.loads(f.read(hlen))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is corrupt: its header is not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(header, dict):
        raise InputError(f"{path} is corrupt: its header is not a JSON object")
    base = 8 + hlen
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path} is corrupt: bad header entry for tensor {name!r}: {entry!r}") from None
        nbytes = _numel(shape) * _itemsize(dtype)
        if end - begin != nbytes or begin < 0:
            raise InputError(f"{path} is corrupt: tensor {name!r} {list(shape)} needs {nbytes} bytes, "
                             f"header says {end - begin}")
        if base + end > size:
            raise InputError(f"{path} is truncated: tensor {name!r} ends at byte {base + end} of a {size}-byte file")
        out[name] = TensorInfo(name, dtype, shape, path, base + begin, nbytes)
    return out


def _pread_into(fd: int, buf: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got <= 0:
            raise InputError(f"{path} is truncated: read stopped at byte {offset + done}")
        done += got


class Checkpoint:
    """A local Hugging Face model directory: config.json + one or many safetensors files."""

    def __init__(self, model_dir: Union[str, os.PathLike]):
        self.dir = Path(model_dir)
        if not self.dir.is_dir():
            raise InputError(f"model directory {self.dir} does not exist")
        config = self.dir / "config.json"
        if not config.is_file():
            raise InputError(f"{self.dir} has no config.json: not a Hugging Face model directory")
        try:
            self.config_dict = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{config} is not valid JSON: {exc}") from None
        self.index_path, files = self._weight_files()
        self.files = files
        self.tensors: dict[str, TensorInfo] = {}
        for path in files:
            if not path.is_file():
                raise InputError(f"{self.dir} is missing the weight file {path.name} listed in {INDEX_NAME}")
            for name, info in read_header(path).items():
                if name in self.tensors:
                    raise InputError(f"tensor {name!r} appears in both {self.tensors[name].path.name} and {path.name}")
                self.tensors[name] = info
        if self.index_path is not None:
            for name, fname in self._weight_map.items():
                info = self.tensors.get(name)
                if info is None or info.path.name != fname:
                    raise InputError(f"{INDEX_NAME} says tensor {name!r} is in {fname}, but it is not there")
        self._fds: dict[Path, int] = {}

    def _weight_files(self) -> tuple[Path | None, list[Path]]:
        index = self.dir / INDEX_NAME
        if index.is_file():
            try:
                data = json.loads(index.read_text())
                self._weight_map = dict(data["weight_map"])
            except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{index} is not a valid safetensors index: {exc}") from None
            return index, [self.dir / f for f in sorted(set(self._weight_map.values()))]
        single = self.dir / SINGLE_NAME
        if single.is_file():
            return None, [single]
        found = sorted(self.dir.glob("*.safetensors"))
        if len(found) == 1:
            return None, found
        others = sorted(p.name for p in self.dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        hint = f" (found {', '.join(others)}: convert to safetensors first)" if others else ""
        if found:
            raise InputError(f"{self.dir} has several .safetensors files but no {INDEX_NAME}")
        raise InputError(f"{self.dir} has no {SINGLE_NAME} or {INDEX_NAME}{hint}")

    # -- reading -------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        return self.tensors[name]

    @property
    def total_bytes(self) -> int:
        return sum(i.nbytes for i in self.tensors.values())

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:  # threads (prefetch, writer, early shard) may race here: one fd is kept
            new = os.open(path, os.O_RDONLY)
            fd = self._fds.setdefault(path, new)
            if fd != new:
                os.close(new)
        return fd

    def read(self, name: str, *, pin_memory: bool = False) -> torch.Tensor:
        """A new CPU tensor holding `name` (pinned when asked, for fast copies to CUDA)."""
        info = self.tensors[name]
        buf = torch.empty(info.nbytes, dtype=torch.uint8, pin_memory=pin_memory)
        if info.nbytes:
            _pread_into(self._fd(info.path), memoryview(buf.numpy()), info.start, info.path)
        return buf.view(info.dtype).reshape(info.shape)

    def read_rows(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` (sorted, unique int64) of a 2-D tensor: only those bytes are read."""
        info = self.tensors[name]
        if len(info.shape) != 2:
            raise ValueError(f"read_rows needs a 2-D tensor; {name} has shape {list(info.shape)}")
        rows = rows.to(torch.int64)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= info.shape[0]):
            raise InputError(f"token id {int(rows.max())} is outside {name} ({info.shape[0]} rows): "
                             "does the tokenizer match the model?")
        row_bytes = info.nbytes // max(info.shape[0], 1)
        out = torch.empty(rows.numel() * row_bytes, dtype=torch.uint8)
        view = memoryview(out.numpy())
        fd = self._fd(info.path)
        ids = rows.tolist()
        i = 0
        while i < len(ids):  # coalesce runs of consecutive rows into one read
            j = i + 1
            while j < len(ids) and ids[j] == ids[j - 1] + 1:
                j += 1
            _pread_into(fd, view[i * row_bytes:j * row_bytes], info.start + ids[i] * row_bytes, info.path)
            i = j
        return out.view(info.dtype).reshape(rows.numel(), info.shape[1])

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# -- writing ------------------------------------------------------------------------------
def _copy_raw(src: RawTensor, dst_fd: int) -> None:
    info = src.checkpoint.info(src.name)
    fd = src.checkpoint._fd(info.path)
    offset, left = info.start, info.nbytes
    while left:
        try:
            n = os.copy_file_range(fd, dst_fd, min(left, 1 << 30), offset)
        except OSError as exc:  # e.g. EXDEV on old kernels: fall back to a bounded buffer
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = min(left, 16 << 20)
            buf = bytearray(n)
            _pread_into(fd, memoryview(buf), offset, info.path)
            write_fd(dst_fd, buf)
        if n <= 0:
            raise InputError(f"{info.path} is truncated: copy of {src.name} stopped early")
        offset += n
        left -= n


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def _copy_rows(src: RowGather, dst_fd: int) -> None:
    ckpt, info = src.checkpoint, src.checkpoint.info(src.name)
    if len(info.shape) == 1:  # a bias over the vocabulary: small
        write_fd(dst_fd, _tensor_bytes(ckpt.read(src.name)[src.rows]))
        return
    for start in range(0, src.rows.numel(), src.chunk_rows):
        write_fd(dst_fd, _tensor_bytes(ckpt.read_rows(src.name, src.rows[start:start + src.chunk_rows])))


TensorSource = Union[torch.Tensor, RawTensor, RowGather]


def safetensors_filler(tensors: Iterable[tuple[str, TensorSource]], metadata: dict | None = None):
    """(fill, data bytes): fill(fd) writes one safetensors file of `tensors` to the open file fd.

    Each entry is a CPU/CUDA tensor, a RawTensor copied byte for byte from an input file, or a
    RowGather of some rows of an input tensor.
    """
    entries = sorted(tensors, key=lambda e: e[0])
    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, src in entries:
        if isinstance(src, RawTensor):
            info = src.checkpoint.info(src.name)
            dtype, shape, nbytes = info.dtype, info.shape, info.nbytes
        elif isinstance(src, RowGather):
            info = src.checkpoint.info(src.name)
            dtype, shape = info.dtype, (src.rows.numel(), *info.shape[1:])
            nbytes = _numel(shape) * _itemsize(dtype)
        else:
            dtype, shape, nbytes = src.dtype, tuple(src.shape), src.numel() * src.element_size()
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"cannot write tensor {name!r} of dtype {dtype} to safetensors")
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)  # the format pads the header so data starts 8-byte aligned

    def fill(fd: int) -> None:
        write_fd(fd, struct.pack("<Q", len(hbytes)) + hbytes)
        for _, src in entries:
            if isinstance(src, RawTensor):
                _copy_raw(src, fd)
            elif isinstance(src, RowGather):
                _copy_rows(src, fd)
            else:
                write_fd(fd, _tensor_bytes(src))

    return fill, offset


def write_safetensors(path: Path, tensors: Iterable[tuple[str, TensorSource]], metadata: dict | None = None) -> int:
    """Write one safetensors file atomically (safetensors_filler); returns the number of data bytes."""
    fill, nbytes = safetensors_filler(tensors, metadata)
    atomic_write(Path(path), fill)
    return nbytes


def write_index(out_dir: Path, weight_map: dict[str, str], total_size: int) -> None:
    atomic_write_json(Path(out_dir) / INDEX_NAME,
                      {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
