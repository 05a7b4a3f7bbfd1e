"""The implementations being compared, each behind the same small interface.

As in tritonbench, a backend does its setup outside the timed region: `prepare(source, device,
dtype)` copies the weights of a seeded `torch.nn.RNN` into the backend's own module and returns a
`Prepared` whose `fn(x, h0) -> (output, h_n)` is what gets timed. Every backend says whether it can
run here (`unavailable`) and whether one case is beyond what it should attempt (`skip`); the
runner turns both into result rows with the reason instead of stopping.

  triton           kernels.TritonRNN(kernel="auto"): the dispatcher picks a persistent kernel
  triton-checkpoint  the same with checkpoint=True: checkpointed BPTT keeps fewer than sqrt(T) states for
                   the backward and recomputes the rest there (less activation memory, more time)
  triton-stepwise  kernels.TritonRNN(kernel="stepwise"): one launch per time step; on CUDA the T launches
                   are replayed from a CUDA graph (kernels/stepwise.py), so a step costs the GPU's launch,
                   not Python's
  cudnn            torch.nn.RNN (cuDNN on CUDA; PyTorch's native CPU RNN without a GPU)
  cudnn-fp16       the same in float16 whatever the job's dtype, planned for bfloat16 jobs: cuDNN has
                   no persistent bfloat16 kernel, so float16 is the fastest cuDNN path a user could pick
  eager            kernels.reference.run_module: a Python loop of PyTorch ops per step
  compile          torch.compile of that loop, applied to chunks of COMPILE_CHUNK steps

On CUDA, eager and compile are host-bound: each step costs the host's launches of that step's
kernels (on an H100, 35-70 us forward and 200-250 us forward+backward for eager, 2026-11-25), the
same at any T. They are skipped beyond HOST_BOUND_MAX_SEQ_LEN steps, with that reason in the row,
instead of spending minutes re-measuring the same per-step cost; compile stops earlier because every
job compiles afresh (about 10 s on the H100 run).
"""
from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Triton's CPU interpreter runs ~4 ms per step per program at H=128: cases above this much work
# (seq_len * hidden * layers, with one batch tile) are skipped there and labelled as such.
INTERPRETER_MAX_WORK = 8192
INTERPRETER_MAX_BATCH = 16
# torch.compile unrolls the Python time loop; compiling chunks of this many steps keeps the
# compile time bounded for any T (the hidden state is carried from chunk to chunk).
COMPILE_CHUNK = 16
# Longest sequence a host-bound backend is run for on CUDA; see the module docstring.
HOST_BOUND_MAX_SEQ_LEN = {"eager": 4096, "compile": 1024}


@dataclass
class Prepared:
    """A backend ready to run one shape: fn(x, h0) -> (output, h_n), its parameters by nn.RNN name,
    and note() describing what ran (kernel plan, TF32 mode), read after the first call."""
    fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    params: dict[str, torch.Tensor]
    note: Callable[[], str] = field(default=lambda: "")


@dataclass(frozen=True)
class Backend:
    """name, a label saying what it is on a device, why it cannot run there (or None), how to
    prepare it, why it skips a case (or None), the dtype it runs in whatever the job's (None: the
    job's) and the job dtypes it is planned for (None: all)."""
    name: str
    label: Callable[[torch.device], str]
    unavailable: Callable[[torch.device], str | None]
    prepare: Callable[[torch.nn.RNN, torch.device, torch.dtype], Prepared]
    skip: Callable[[object, torch.device], str | None] = lambda case, device: None
    runs_in: str | None = None
    for_dtypes: tuple[str, ...] | None = None

    def dtype_for(self, job_dtype: str) -> str:
        """The dtype this backend runs a job of job_dtype in."""
        return self.runs_in or job_dtype

    def serves(self, job_dtype: str) -> bool:
        """Whether jobs of job_dtype are planned for this backend."""
        return self.for_dtypes is None or job_dtype in self.for_dtypes


def seeded_rnn(case, nonlinearity: str, seed: int) -> torch.nn.RNN:
    """The float32 CPU nn.RNN whose weights every backend copies for this case."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.RNN(case.input_size, case.hidden, case.layers, nonlinearity=nonlinearity)


def copy_rnn(source: torch.nn.RNN, device: torch.device, dtype: torch.dtype) -> torch.nn.RNN:
    """A torch.nn.RNN with the same settings and weights as source, on device in dtype."""
    rnn = torch.nn.RNN(source.input_size, source.hidden_size, source.num_layers, nonlinearity=source.nonlinearity,
                       bias=source.bias, batch_first=source.batch_first, bidirectional=source.bidirectional)
    rnn.load_state_dict(source.state_dict())
    return rnn.to(device=device, dtype=dtype)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


# ---- triton ---------------------------------------------------------------------------------

def _triton_mode(device: torch.device) -> str | None:
    from kernels.runtime import triton_mode
    return triton_mode(device)


@functools.lru_cache(maxsize=None)
def _triton_unavailable(device_type: str) -> str | None:
    """Why kernels.TritonRNN cannot run here (import failure or a tiny forward failing), else None."""
    device = torch.device(device_type)
    if _triton_mode(device) is None:
        return "Triton needs a CUDA GPU or TRITON_INTERPRET=1 set before kernels is imported"
    try:
        from kernels import TritonRNN
        rnn = TritonRNN(16, 16, device=device)
        rnn(torch.zeros(2, 1, 16, device=device))
    except Exception as err:  # any failure means "not usable here", with the reason shown
        return f"kernels.TritonRNN does not run here: {type(err).__name__}: {first_line(err)}"
    return None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for an error column."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""


def _triton_skip(case, device: torch.device) -> str | None:
    if device.type != "cpu" or _triton_mode(device) != "interpreter":  # the interpreter runs on CPU tensors
        return None
    if case.seq_len * case.hidden * case.layers > INTERPRETER_MAX_WORK or case.batch > INTERPRETER_MAX_BATCH:
        return (f"Triton interpreter cap: runs only seq_len*hidden*layers <= {INTERPRETER_MAX_WORK} and "
                f"batch <= {INTERPRETER_MAX_BATCH} on CPU (about 4 ms per step at H=128)")
    return None


def _triton_prepare(kernel: str, checkpoint: bool):
    def prepare(source: torch.nn.RNN, device: torch.device, dtype: torch.dtype) -> Prepared:
        from kernels import TritonRNN
        rnn = TritonRNN(source.input_size, source.hidden_size, source.num_layers, nonlinearity=source.nonlinearity,
                        bias=source.bias, device=device, dtype=dtype, kernel=kernel, checkpoint=checkpoint)
        rnn.load_state_dict(source.state_dict())

        def note() -> str:
            plans = getattr(rnn, "last_plans", None) or []
            return "; ".join(dict.fromkeys(p.name for p in plans))
        return Prepared(rnn, _params(rnn), note)
    return prepare


STEPWISE_ON_CUDA = "one launch per step, replayed from a CUDA graph"


def _triton_label(kernel: str, checkpoint: bool):
    def label(device: torch.device) -> str:
        mode = _triton_mode(device)
        name = f"Triton {kernel}" + (" checkpoint=True" if checkpoint else "")
        if mode == "interpreter":
            return f"{name} (interpreter)"
        if kernel == "stepwise" and mode == "cuda":
            return f"{name} ({STEPWISE_ON_CUDA})"
        return name
    return label


def _triton_backend(name: str, kernel: str, checkpoint: bool = False) -> Backend:
    return Backend(name, _triton_label(kernel, checkpoint), lambda device: _triton_unavailable(device.type),
                   _triton_prepare(kernel, checkpoint), _triton_skip)


# ---- cudnn / native -------------------------------------------------------------------------

def _tf32_note(dtype: torch.dtype) -> str:
    if dtype != torch.float32:
        return ""
    return "TF32 allowed" if torch.backends.cudnn.allow_tf32 else "TF32 off"


def _cudnn_prepare(source: torch.nn.RNN, device: torch.device, dtype: torch.dtype) -> Prepared:
    rnn = copy_rnn(source, device, dtype)
    if device.type == "cuda":
        rnn.flatten_parameters()
        return Prepared(rnn, _params(rnn), lambda: _tf32_note(dtype))
    return Prepared(rnn, _params(rnn))


def _cudnn_unavailable(device: torch.device) -> str | None:
    if device.type == "cuda" and not torch.backends.cudnn.is_available():
        return "torch.backends.cudnn is not available in this PyTorch build"
    return None


# cuDNN refuses sequences this long (CUDNN_STATUS_NOT_SUPPORTED in every dtype on an H100 with
# cuDNN 9.19; 65535 steps run): skipped with the reason instead of recorded as a failure.
CUDNN_MAX_SEQ_LEN = 65535


def _cudnn_skip(case, device: torch.device) -> str | None:
    if device.type == "cuda" and case.seq_len > CUDNN_MAX_SEQ_LEN:
        return f"cuDNN's sequence limit: it refuses seq_len > {CUDNN_MAX_SEQ_LEN} (CUDNN_STATUS_NOT_SUPPORTED)"
    return None


def _cudnn_label(device: torch.device) -> str:
    return "cuDNN (torch.nn.RNN)" if device.type == "cuda" else "PyTorch native CPU RNN (not cuDNN)"


def _cudnn_fp16_label(device: torch.device) -> str:
    return _cudnn_label(device) + " in float16"


# ---- eager and torch.compile ----------------------------------------------------------------

def _host_bound_skip(name: str):
    limit = HOST_BOUND_MAX_SEQ_LEN[name]

    def skip(case, device: torch.device) -> str | None:
        if device.type == "cuda" and case.seq_len > limit:
            return (f"host-bound loop: run up to seq_len {limit} on CUDA; its time per step is the host's "
                    f"launch cost of each step, the same at any T")
        return None
    return skip


def reference_loop(source: torch.nn.RNN, device: torch.device, dtype: torch.dtype) -> Prepared:
    """The eager backend's model: the reference loop (kernels.reference) on a copy of source, in dtype on device."""
    from kernels.reference import run_module
    rnn = copy_rnn(source, device, dtype)
    return Prepared(lambda x, h0: run_module(rnn, x, h0), _params(rnn))


def _compile_prepare(source: torch.nn.RNN, device: torch.device, dtype: torch.dtype) -> Prepared:
    from kernels.reference import reference_forward
    rnn = copy_rnn(source, device, dtype)
    weights = _params(rnn)
    torch._dynamo.reset()  # a fresh compile per case: no recompile limit reached, no silent fallback
    step = torch.compile(functools.partial(reference_forward, num_layers=rnn.num_layers,
                                           nonlinearity=rnn.nonlinearity), dynamic=False)

    def forward(x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, h = [], h0
        for chunk in x.split(COMPILE_CHUNK):
            y, h = step(chunk, h, weights)
            outputs.append(y)
        return torch.cat(outputs), h
    return Prepared(forward, weights, lambda: f"compiled in chunks of {COMPILE_CHUNK} steps")


def _compile_unavailable(device: torch.device) -> str | None:
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++")):
        return "torch.compile on CPU needs a C/C++ compiler (none on PATH)"
    return None


# Without a GPU the `cudnn` backends are PyTorch's native CPU RNN: table columns and plot legends say so.
CPU_NAMES = {"cudnn": "PyTorch CPU RNN (cudnn)", "cudnn-fp16": "PyTorch CPU RNN fp16 (cudnn-fp16)"}


def display_name(backend: str, device_type: str) -> str:
    """The backend's name in tables and plots of a run on device_type ("cpu" or "cuda")."""
    return CPU_NAMES.get(backend, backend) if device_type == "cpu" else backend


BACKENDS: dict[str, Backend] = {
    "triton": _triton_backend("triton", "auto"),
    "triton-stepwise": _triton_backend("triton-stepwise", "stepwise"),
    "cudnn": Backend("cudnn", _cudnn_label, _cudnn_unavailable, _cudnn_prepare, _cudnn_skip),
    "cudnn-fp16": Backend("cudnn-fp16", _cudnn_fp16_label, _cudnn_unavailable, _cudnn_prepare, _cudnn_skip,
                          runs_in="float16", for_dtypes=("bfloat16",)),
    "eager": Backend("eager", lambda device: "eager PyTorch loop", lambda device: None, reference_loop,
                     _host_bound_skip("eager")),
    "compile": Backend("compile", lambda device: "torch.compile of the eager loop", _compile_unavailable,
                       _compile_prepare, _host_bound_skip("compile")),
    "triton-checkpoint": _triton_backend("triton-checkpoint", "auto", checkpoint=True),
}
CUDNN_BACKENDS = ("cudnn", "cudnn-fp16")
FP16_REFERENCE = "cudnn-fp16"  # bfloat16 jobs also get a speedup over it (metric speedup_fp16)
