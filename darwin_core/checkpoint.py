"""Safetensors checkpoints on disk: header validation, lazy tensor reads and a streaming writer.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping each
tensor name to its dtype, shape and [begin, end) byte range in the data section, then the data.
Reading the header ourselves lets every problem be reported with the file and tensor it
concerns before any weight is read; the `safetensors` library then reads the tensors.
"""

import hashlib
import json
import logging
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DarwinWarning, ParentError

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")

# Safetensors dtype codes and their torch dtypes; the element size comes from torch.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
TORCH_TO_SAFETENSORS = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

# A header larger than this is certainly corrupt (real headers are kilobytes to a few megabytes).
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, dtype, shape and absolute byte range in that file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a safetensors file's header against its size and return its tensors and metadata.

    Raises `ParentError` for a truncated file, a header length past the end of the file, invalid
    JSON, an unknown dtype, or a byte range that disagrees with the dtype and shape.
    """
    size = path.stat().st_size
    if size < 8:
        raise ParentError(f"{path}: file is {size} bytes, too short to be safetensors. Re-download or re-save it.")
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if header_length > size - 8 or header_length > MAX_HEADER_BYTES:
            raise ParentError(
                f"{path}: header length {header_length} bytes is larger than the file ({size} bytes); "
                "the file is truncated or not safetensors. Re-download or re-save it."
            )
        raw = handle.read(header_length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ParentError(f"{path}: header is not valid JSON; the file is corrupt. Re-download or re-save it.") from None

    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_length
    data_length = size - data_start
    tensors: dict[str, TensorInfo] = {}
    expected_end = 0
    for name, entry in sorted(header.items(), key=lambda item: item[1].get("data_offsets", [0])[0]):
        dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ParentError(f"{path}: tensor {name} has unsupported dtype {entry.get('dtype')!r}")
        shape = tuple(int(dim) for dim in entry.get("shape", ()))
        begin, end = (int(offset) for offset in entry.get("data_offsets", (-1, -1)))
        element_size = torch.empty((), dtype=dtype).element_size()
        expected_bytes = math.prod(shape) * element_size
        if end - begin != expected_bytes:
            raise ParentError(
                f"{path}: tensor {name} is declared {entry['dtype']} {list(shape)} ({expected_bytes} bytes) "
                f"but its byte range holds {end - begin} bytes; the header is corrupt. Re-download or re-save the file."
            )
        if begin != expected_end:
            raise ParentError(f"{path}: tensor {name} starts at byte {begin}, expected {expected_end}; the header is corrupt.")
        if end > data_length:
            raise ParentError(
                f"{path}: tensor {name} ends at byte {end} of the data section, but the file holds only "
                f"{data_length} data bytes; the file is truncated. Re-download it."
            )
        expected_end = end
        tensors[name] = TensorInfo(name, dtype, shape, path, data_start + begin, data_start + end)
    if expected_end != data_length:
        raise ParentError(
            f"{path}: {data_length - expected_end} bytes after the last tensor are not described by the header; "
            "the file is corrupt. Re-download or re-save it."
        )
    return tensors, metadata


class Checkpoint:
    """A folder of safetensors weights (one file, or shards listed in an index) plus its config.

    Construction checks everything that can be checked without reading weights: the config is
    readable JSON, every shard the index names exists, every header is consistent with its
    file, and each tensor name appears once. Tensors are read one at a time with `get`.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ParentError(f"{self.folder}: folder not found")
        self.config = read_config(self.folder)
        self.files = self._weight_files()
        self.metadata: dict[str, str] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for file in self.files:
            infos, metadata = read_safetensors_header(file)
            self.metadata.update(metadata)
            for name, info in infos.items():
                if name in self.tensors:
                    raise ParentError(f"{self.folder}: tensor {name} appears in both {self.tensors[name].file.name} and {file.name}")
                self.tensors[name] = info
        self._check_index_map()
        self._handles: dict[Path, object] = {}

    def _weight_files(self) -> list[Path]:
        index_path = self.folder / INDEX_NAME
        present = sorted(self.folder.glob("*.safetensors"))
        if index_path.is_file():
            try:
                self.weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ParentError(f"{index_path}: invalid index; it must be JSON with a 'weight_map' object") from None
            shard_names = sorted(set(self.weight_map.values()))
            missing = [name for name in shard_names if not (self.folder / name).is_file()]
            if missing:
                raise ParentError(
                    f"{self.folder}: the index names shard {missing[0]}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + ", which is missing. Download the complete checkpoint again."
                )
            stray = [path.name for path in present if path.name not in shard_names]
            if stray:
                warnings.warn(
                    f"{self.folder}: ignoring {', '.join(stray)}, not listed in {INDEX_NAME}", DarwinWarning, stacklevel=3
                )
            return [self.folder / name for name in shard_names]
        self.weight_map = {}
        if not present:
            pickled = [path.name for pattern in PICKLE_PATTERNS for path in self.folder.glob(pattern)]
            if pickled:
                raise ParentError(pickle_refusal(self.folder, pickled))
            raise ParentError(f"{self.folder}: no .safetensors weights found")
        if len(present) > 1:
            raise ParentError(
                f"{self.folder}: {len(present)} safetensors files but no {INDEX_NAME} to say how they fit together; "
                "add the index or keep one model per folder"
            )
        return present

    def _check_index_map(self) -> None:
        for name, shard in self.weight_map.items():
            info = self.tensors.get(name)
            if info is None:
                raise ParentError(f"{self.folder}: the index puts tensor {name} in {shard}, but that file does not contain it")

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    @property
    def parameter_count(self) -> int:
        return sum(info.numel for info in self.tensors.values())

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (memory-mapped by safetensors, then materialised by torch)."""
        from safetensors import safe_open

        info = self.tensors[name]
        handle = self._handles.get(info.file)
        if handle is None:
            handle = safe_open(str(info.file), framework="pt")
            self._handles[info.file] = handle
        return handle.get_tensor(name)

    def close(self) -> None:
        self._handles.clear()


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ParentError(f"{folder}: config.json not found; a parent must be a Hugging Face model folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ParentError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(config, dict):
        raise ParentError(f"{path}: expected a JSON object")
    return config


def pickle_refusal(folder: Path, files: list[str]) -> str:
    return (
        f"{folder}: holds only pickled PyTorch weights ({', '.join(sorted(files)[:3])}). Darwin Studio reads "
        "safetensors or GGUF only, because unpickling a file can run arbitrary code. If you trust the "
        "checkpoint, pass --allow-pickle to convert it once, or convert it yourself with: python -c "
        "\"from transformers import AutoModelForCausalLM; "
        f"AutoModelForCausalLM.from_pretrained('{folder}').save_pretrained('{folder}-safetensors')\""
    )


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a larger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    filled = 0
    for tensor in tensors:
        if shards[-1] and filled + tensor.nbytes > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(tensor)
        filled += tensor.nbytes
    return shards


class SafetensorsStreamWriter:
    """Write one safetensors file tensor by tensor, holding only the tensor being written.

    The header is written first from the planned names, dtypes and shapes, so the layout is
    fixed before any data arrives; `write` must then be called once per tensor in plan order.
    The file is byte-identical for identical inputs, and its SHA-256 is computed on the way
    (`sha256` after `close`), so the file is never read back.
    """

    def __init__(self, path: Path, planned: list[PlannedTensor], metadata: dict[str, str] | None = None):
        self.path = path
        self.planned = planned
        self.position = 0
        header: dict[str, dict] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for tensor in planned:
            header[tensor.name] = {
                "dtype": TORCH_TO_SAFETENSORS[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + tensor.nbytes],
            }
            offset += tensor.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
        self.digest = hashlib.sha256()
        self.handle = open(path, "wb")
        self._write(struct.pack("<Q", len(encoded)))
        self._write(encoded)

    def _write(self, data) -> None:
        self.handle.write(data)
        self.digest.update(data)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.planned[self.position]
        if name != expected.name or tensor.dtype != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise RuntimeError(
                f"tensor {name} {tensor.dtype} {list(tensor.shape)} does not match the planned "
                f"{expected.name} {expected.dtype} {list(expected.shape)}"
            )
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._write(memoryview(data))
        self.position += 1

    def close(self) -> None:
        """Close the file. It is not fsynced: a crash can lose it, but the child's record lists
        every weight file's SHA-256, so `darwin inspect` finds a damaged file."""
        if self.position != len(self.planned):
            self.handle.close()
            raise RuntimeError(f"{self.path}: wrote {self.position} of {len(self.planned)} planned tensors")
        self.handle.close()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.handle.close()
