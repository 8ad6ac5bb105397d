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
import mmap
import queue
import struct
import threading
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

# Bytes of computed tensors that may wait for the background writer at once (see
# SafetensorsStreamWriter); with the tensor being computed, this bounds a streaming breed's buffers.
DEFAULT_WRITE_BUFFER_BYTES = 64 * 1024 * 1024

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
        """Read one tensor through a memory map of its own byte range that lives exactly as long
        as the returned tensor.

        Mapping per tensor, instead of keeping the whole file mapped, lets the map go away with
        the tensor, and with it the file pages it made resident in this process. A streaming
        breed of SmolLM2-135M then peaked at 330 MB instead of 740 MB of RSS for one parent. The
        header was validated when the checkpoint was opened, so no JSON is parsed here (opening
        the file with `safetensors.safe_open` for each tensor parsed it every time). The map is
        copy-on-write: writing into the tensor never reaches the parent's file. A positioned
        read into a fresh buffer was tried as well and was slower (1.5 s against 1.0 s for the
        whole breed), because every new buffer is zeroed and copied into.
        """
        info = self.tensors[name]
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        start = info.begin - info.begin % mmap.ALLOCATIONGRANULARITY
        with open(info.file, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), info.end - start, offset=start, access=mmap.ACCESS_COPY)
        tensor = torch.frombuffer(mapped, dtype=info.dtype, count=info.numel, offset=info.begin - start)
        return tensor.reshape(info.shape)


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


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or Inf. A sum is one read-only pass and is NaN or Inf when
    any entry is; only then (or if the sum itself overflows) is every entry checked."""
    if torch.isfinite(tensor.sum()):
        return True
    return bool(torch.isfinite(tensor).all())


class SafetensorsStreamWriter:
    """Write one safetensors file tensor by tensor, with a bounded amount of data in flight.

    The header is written first from the planned names, dtypes and shapes, so the layout is
    fixed before any data arrives; `write` must then be called once per tensor in plan order.
    A background thread checks each float tensor for NaN and Inf (`nonfinite`), writes its bytes
    and feeds them to SHA-256 (`sha256` after `close`), so the file is never read back and the
    caller can compute the next tensor meanwhile; `write` blocks while more than `buffer_bytes` are waiting (one tensor larger than
    that still passes alone). The file is byte-identical for identical inputs.
    """

    def __init__(self, path: Path, planned: list[PlannedTensor], metadata: dict[str, str] | None = None,
                 buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES):
        self.path = path
        self.planned = planned
        self.position = 0
        self.buffer_bytes = buffer_bytes
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

        self.nonfinite: list[str] = []  # names of written float tensors holding NaN or Inf
        self._pending: queue.Queue = queue.Queue()
        self._in_flight = 0
        self._condition = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"write {path.name}", daemon=True)
        self._thread.start()

    def _write(self, data) -> None:
        self.handle.write(data)
        self.digest.update(data)

    def _drain(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            name, tensor = item
            try:
                if self._error is None:
                    if tensor.is_floating_point() and not all_finite(tensor):
                        self.nonfinite.append(name)
                    self._write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
            except BaseException as error:  # handed to the caller by `write` or `close`
                self._error = error
            with self._condition:
                self._in_flight -= tensor.numel() * tensor.element_size()
                self._condition.notify_all()

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self._raise_pending_error()
        expected = self.planned[self.position]
        if name != expected.name or tensor.dtype != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise RuntimeError(
                f"tensor {name} {tensor.dtype} {list(tensor.shape)} does not match the planned "
                f"{expected.name} {expected.dtype} {list(expected.shape)}"
            )
        tensor = tensor.detach().contiguous()
        size = tensor.numel() * tensor.element_size()
        with self._condition:
            while self._in_flight > 0 and self._in_flight + size > self.buffer_bytes and self._error is None:
                self._condition.wait()
            self._in_flight += size
        self._pending.put((name, tensor))
        self.position += 1

    def _finish_thread(self) -> None:
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()

    def close(self) -> None:
        """Wait for the pending data and close the file. It is not fsynced: a crash can lose it,
        but the child's record lists every weight file's SHA-256, so `darwin inspect` finds a
        damaged file."""
        self._finish_thread()
        self.handle.close()
        self._raise_pending_error()
        if self.position != len(self.planned):
            raise RuntimeError(f"{self.path}: wrote {self.position} of {len(self.planned)} planned tensors")

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def abort(self) -> None:
        self._error = self._error or RuntimeError("write aborted")
        self._finish_thread()
        self.handle.close()
