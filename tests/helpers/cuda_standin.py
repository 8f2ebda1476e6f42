"""Fault-free CUDA stand-ins, so the engine's `device.type == "cuda"` branches run on a CPU-only machine.

Test-only. The engine keeps its device in `_Run.device`; `install()` makes it a `SimCudaDevice`, a
`str` subclass whose `.type` is "cuda" while torch, which reads the string, places every tensor on
the CPU. The torch.cuda calls the engine makes (side stream, event, stream context, current stream,
record_stream, pinned reads and buffers, peak-memory counters, synchronize) are replaced by recorders
that check the protocol as it happens: an event is recorded on the copy stream inside its stream
context before the compute stream waits on it, and every block tensor is handed to the compute
stream with record_stream before the block runs; the pruned matrices go to the host on the d2h
stream, whose event the writer waits for. What this cannot see is the GPU itself (kernels,
asynchronous copies, memory); tests/native covers the kernels under tests/cuda_sim.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass, field

import torch

PEAK_BYTES = 123_456_789  # what the stand-in reports as max_memory_allocated


class SimCudaDevice(str):
    """Reads as "cpu" to torch (`t.to(d)`, `torch.zeros(..., device=d)`), as CUDA to the engine."""

    type = "cuda"
    index = 0

    def __new__(cls):
        return super().__new__(cls, "cpu")


class FakeStream:
    def __init__(self, log: CudaLog, name: str):
        self.log, self.name, self.cuda_stream = log, name, 0

    def wait_event(self, event: FakeEvent) -> None:
        assert event.recorded_on is not None, f"{self.name} stream waits on an event never recorded"
        self.log.add("wait_event", stream=self.name, event=event.id, on=event.recorded_on)

    def wait_stream(self, other: FakeStream) -> None:
        self.log.add("wait_stream", stream=self.name, on=other.name)

    def synchronize(self) -> None:
        self.log.add("synchronize", stream=self.name)

    def __repr__(self):
        return f"<FakeStream {self.name}>"


class FakeEvent:
    def __init__(self, log: CudaLog):
        self.log, self.recorded_on = log, None
        self.id = log.next_id()

    def record(self, stream: FakeStream | None = None) -> None:
        stream = stream or self.log.current()
        assert self.log.current() is stream, "event recorded on a stream other than the current one"
        self.recorded_on = stream.name
        self.log.add("record_event", stream=stream.name, event=self.id)

    def synchronize(self) -> None:
        assert self.recorded_on is not None, "synchronize on an event never recorded"
        self.log.add("event_synchronize", event=self.id, on=self.recorded_on)


@dataclass
class CudaLog:
    """Everything the engine asked of the stand-ins, in order, with the calling thread."""

    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)
    ids: int = 0

    def __post_init__(self):
        self.compute = FakeStream(self, "compute")  # the default (current) stream

    def next_id(self) -> int:
        with self.lock:
            self.ids += 1
            return self.ids

    def add(self, kind: str, **info) -> None:
        with self.lock:
            self.events.append((kind, threading.current_thread().name, info))

    def current(self) -> FakeStream:
        return getattr(self.local, "stream", self.compute)

    def of(self, kind: str) -> list[dict]:
        return [{"thread": t, **info} for k, t, info in self.events if k == kind]


def install(monkeypatch) -> CudaLog:
    """Route the engine's CUDA branches through recording stand-ins (undone by monkeypatch)."""
    from featprune_ext.engine import run as engine_run
    from featprune_ext.engine import transfers
    from featprune_ext.engine.checkpoint import Checkpoint

    log = CudaLog()

    @contextlib.contextmanager
    def stream(s):
        previous = log.current()
        log.local.stream = s
        log.add("enter_stream", stream=s.name)
        try:
            yield
        finally:
            log.local.stream = previous

    def record_stream(tensor, s):
        assert isinstance(s, FakeStream)
        log.add("record_stream", stream=s.name, ptr=tensor.data_ptr())

    real_read = Checkpoint.read

    def read(self, name, *, pin_memory=False):
        log.add("read", name=name, pinned=pin_memory)
        return real_read(self, name)  # no pinned allocator without CUDA: a plain CPU buffer

    def pinned_like(t):
        log.add("pinned_alloc", shape=tuple(t.shape))
        return torch.empty(t.shape, dtype=t.dtype)

    stream_names = iter(["copy", "d2h"])  # the order _Run.execute creates them in

    for name, fn in {
        "Stream": lambda device=None: log.add("new_stream") or FakeStream(log, next(stream_names)),
        "Event": lambda *a, **k: FakeEvent(log),
        "stream": stream,
        "current_stream": lambda device=None: log.current(),
        "reset_peak_memory_stats": lambda device=None: log.add("reset_peak"),
        "max_memory_allocated": lambda device=None: PEAK_BYTES,
        "synchronize": lambda device=None: log.add("synchronize"),
        "mem_get_info": lambda device=None: (8 << 30, 16 << 30),
        "memory_reserved": lambda device=None: 0,
    }.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.setattr(torch.Tensor, "record_stream", record_stream)
    monkeypatch.setattr(Checkpoint, "read", read)
    monkeypatch.setattr(transfers, "_pinned_like", pinned_like)

    real_run = engine_run._Run
    signature = inspect.signature(real_run.__init__)

    class SimRun(real_run):
        def __init__(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            assert torch.device(bound.arguments["device"]).type == "cpu", "the stand-in replaces a CPU run"
            bound.arguments["device"] = SimCudaDevice()
            log.add("run_on_sim_cuda")
            super().__init__(*bound.args[1:], **bound.kwargs)

    monkeypatch.setattr(engine_run, "_Run", SimRun)
    return log
