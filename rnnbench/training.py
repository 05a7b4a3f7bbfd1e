"""Training as a benchmark metric: every backend trains the same model, from the same weights, on the
same batches, and the loss, gradient norms and time of every step are recorded.

The model is the backend's recurrent layer (its `Prepared.fn`: TritonRNN for the triton backends,
torch.nn.RNN for cudnn, the reference loop for eager and compile) and a linear head on the states
the task reads (rnnbench/tasks.py):

    prediction = W_o readout(h_1..h_T) + b_o,   h_t = act(x_t W_ih^T + b_ih + h_{t-1} U^T + b_hh)

Initial weights: the seeded nn.RNN every backend copies (the runner's seeded_rnn), with U rescaled
to a spectral radius when one is given (as in the stability study: below 1 gradients vanish over
time, above 1 they can explode), and a seeded head. Batch s of training comes from seed (seed, s),
the held-out batch from a stream of its own: every backend sees the same numbers.

Precision (the dtype column), as torch.amp recommends:
  float32, float64  parameters and arithmetic in that dtype
  float16           fp32 parameters (master weights), the forward under torch.autocast(float16), the
                    loss scaled by torch.amp.GradScaler and the gradients unscaled before their norm
                    is taken and they are clipped; a step with inf/NaN gradients is skipped by the scaler
  bfloat16          fp32 parameters, the forward under torch.autocast(bfloat16); no scaler (bf16 has
                    fp32's exponent range)

One step: forward, loss, backward, gradient norm, clipping (optional: every gradient scaled by
min(1, clip / norm), as clip_grad_norm_ does), optimizer update (plain SGD, as in Pascanu et al.
2013, or Adam). A step whose loss is not finite ends the training: the model diverged, which is a
result, not a failure.

Measurements (rows of kind "training"; the mode column names the task and clipping, e.g.
"copy clip=1"; radius is U's spectral radius at initialisation, blank for nn.RNN's own):
  per step (the step column):
    loss                  the training batch's loss, before the step's update
    param_grad_norm       ‖dL/dθ‖ over every parameter, before clipping (in float64, so it does
                          not overflow before the gradients do)
    input_grad_ratio      ‖dL/dx_1‖ / ‖dL/dx_T‖: how much of the loss's gradient reaches the first
                          input step, against the last; it falls towards 0 when gradients vanish over
                          the T steps and grows far above 1 when they explode
  once:
    time_per_train_step   ms per step (all of the above), p20/p50/p80 over the steps after the first
                          (the first compiles, autotunes and touches memory for the first time)
    eval_loss, eval_accuracy   on the held-out batch after training (not when it diverged)
    chance_loss           the loss of a prediction that ignores the input (rnnbench/tasks.py)
    diverged_at_step      the step whose loss was not finite (only when one was)
    amp_skipped_steps     float16: the steps GradScaler skipped for inf/NaN gradients
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from rnnbench import measure
from rnnbench.backends import BACKENDS, Prepared
from rnnbench.results import Job
from rnnbench.schema import Case, Scenario, Training
from rnnbench.stability import spectral_matrix
from rnnbench.tasks import Task, make_task

# Random streams of a seed: training batch s uses stream s; these two are kept apart from them.
EVAL_STREAM, HEAD_STREAM = -1, -2


def stream_seed(seed: int, stream: int) -> int:
    return seed * 1_000_003 + stream


def batch_generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


@dataclass(frozen=True)
class Precision:
    """How a dtype of the scenario trains: the parameters' dtype, the autocast dtype, a loss scaler."""
    params: torch.dtype
    autocast: torch.dtype | None = None
    scaled: bool = False

    def note(self) -> str:
        if self.autocast is None:
            return ""
        return f"fp32 master weights, autocast {str(self.autocast).removeprefix('torch.')}" + \
            (", GradScaler" if self.scaled else "")


PRECISIONS = {"float32": Precision(torch.float32), "float64": Precision(torch.float64),
              "float16": Precision(torch.float32, torch.float16, scaled=True),
              "bfloat16": Precision(torch.float32, torch.bfloat16)}


@dataclass(frozen=True)
class Measurement:
    """One row's content: metric, its unit, (p20, p50, p80), the training step (per-step metrics), a note."""
    metric: str
    unit: str
    values: tuple
    step: int | None = None
    note: str = ""


# ---- the jobs ------------------------------------------------------------------------------

def variant_name(task: str, clip: float | None) -> str:
    """The mode column of a training job: the task, and the clipping threshold if any ("copy clip=1")."""
    return task if clip is None else f"{task} clip={clip:g}"


def variants(training: Training) -> dict[str, tuple[str, float | None]]:
    """mode column -> (task, clip) for every task and clipping setting of the scenario."""
    return {variant_name(task, clip): (task, clip) for task in training.tasks for clip in training.clip}


def plan(scenario: Scenario) -> list[Job]:
    """The training jobs: shorter sequences first (they finish sooner), the backends side by side
    (not a backend that runs another dtype than the job's, like cudnn-fp16: autocast sets the dtype)."""
    tr = scenario.training
    return [Job("training", backend, mode, dtype, training_case(tr, task, seq_len), radius)
            for seq_len in sorted(tr.seq_lens) for mode, (task, _) in variants(tr).items() for radius in tr.radii
            for dtype in scenario.dtypes for backend in scenario.ordered_backends()
            if BACKENDS[backend].runs_in is None]


def training_case(training: Training, task: str, seq_len: int) -> Case:
    return Case(seq_len, training.batch, training.hidden, make_task(task, training).input_size, 1)


# ---- the model --------------------------------------------------------------------------------

@dataclass
class Model:
    """A backend's recurrent layer and the head on the states the task reads."""
    prepared: Prepared
    head: torch.nn.Linear
    task: Task
    hidden: int

    def parameters(self) -> list[torch.Tensor]:
        return [*self.prepared.params.values(), *self.head.parameters()]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h0 = x.new_zeros(1, x.shape[1], self.hidden)
        states, _ = self.prepared.fn(x, h0)
        return self.head(self.task.readout(states))


def initial_weights(source: torch.nn.RNN, head_size: int, radius: float | None, seed: int) -> torch.nn.Linear:
    """Sets U of the seeded source RNN to spectral radius `radius` (if given) and returns the seeded
    head; both float32 on the CPU, copied by every backend."""
    gen = torch.Generator().manual_seed(seed)
    if radius is not None:
        with torch.no_grad():
            source.weight_hh_l0.copy_(spectral_matrix(source.hidden_size, radius, gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, HEAD_STREAM))
        return torch.nn.Linear(source.hidden_size, head_size)


def build_model(backend: str, source: torch.nn.RNN, head: torch.nn.Linear, task: Task, device: torch.device,
                precision: Precision) -> Model:
    """The backend's copy of source and of head, on device, with parameters in precision.params."""
    prepared = BACKENDS[backend].prepare(source, device, precision.params)
    own_head = torch.nn.Linear(head.in_features, head.out_features, device=device, dtype=precision.params)
    own_head.load_state_dict(head.state_dict())
    return Model(prepared, own_head, task, source.hidden_size)


# ---- training -------------------------------------------------------------------------------

@dataclass
class History:
    """What training recorded, per step, and how it ended."""
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    grad_ratio: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    skipped_steps: int = 0


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)


def grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """||g|| over all the gradients, in float64 (a float32 sum of squares overflows from about 1e19)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]))


def clip_(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """clip_grad_norm_'s rule with the norm already taken: every gradient times min(1, max_norm / norm)."""
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))


def input_grad_ratio(x_grad: torch.Tensor) -> float:
    """‖dL/dx_1‖ / ‖dL/dx_T‖ (NaN when both are 0)."""
    first, last = (torch.linalg.vector_norm(x_grad[t], dtype=torch.float64) for t in (0, -1))
    return (first / last).item() if last > 0 or first > 0 else math.nan


def autocast(device: torch.device, precision: Precision):
    if precision.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast)


def step_clock(device: torch.device):
    """Seconds for timing a step: CPU timings as the harness takes them (measure.cpu_clock); on CUDA
    the wall clock, with the GPU synchronised at both ends of the step."""
    if device.type == "cuda":
        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return clock
    return measure.cpu_clock(torch.get_num_threads())[0]


def train(model: Model, training: Training, seq_len: int, precision: Precision, device: torch.device,
          seed: int, clip: float | None) -> History:
    """`training.steps` optimizer steps on fresh batches; stops at the first non-finite loss."""
    params = model.parameters()
    optimizer = make_optimizer(training.optimizer, params, training.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)
    clock, history = step_clock(device), History()
    for step in range(training.steps):
        batch = model.task.batch(seq_len, training.batch, batch_generator(seed, step)).to(device)
        x = batch.x.to(precision.params).requires_grad_(True)  # its gradient measures what reaches each step
        start = clock()
        with autocast(device, precision):
            loss = model.task.loss(model(x), batch.target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        norm = grad_norm(grads)
        if clip is not None:
            clip_(grads, clip, norm)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        history.seconds.append(clock() - start)
        history.loss.append(loss.item())
        history.grad_norm.append(norm.item())
        history.grad_ratio.append(input_grad_ratio(x.grad))
        history.skipped_steps += precision.scaled and scaler.get_scale() < scale  # the scaler backs off when it skips
        if not math.isfinite(history.loss[-1]):
            history.diverged_at = step
            break
    return history


def evaluate(model: Model, training: Training, seq_len: int, precision: Precision, device: torch.device,
             seed: int) -> tuple[float, float]:
    """(loss, accuracy) on the held-out batch."""
    batch = model.task.batch(seq_len, training.eval_batch, batch_generator(seed, EVAL_STREAM)).to(device)
    with torch.no_grad(), autocast(device, precision):
        prediction = model(batch.x.to(precision.params))
    return model.task.loss(prediction, batch.target).item(), model.task.accuracy(prediction, batch.target)


# ---- one job ---------------------------------------------------------------------------------

def run(job: Job, scenario: Scenario, device: torch.device, source: torch.nn.RNN) -> list[Measurement]:
    """Trains the job's backend from source (the seeded nn.RNN of the job's case) and returns its
    measurements."""
    tr = scenario.training
    task_name, clip = variants(tr)[job.mode]
    task = make_task(task_name, tr)
    precision = PRECISIONS[job.dtype]
    head = initial_weights(source, task.output_size, job.radius, scenario.seed)
    model = build_model(job.backend, source, head, task, device, precision)
    history = train(model, tr, job.case.seq_len, precision, device, scenario.seed, clip)
    note = "; ".join(n for n in (model.prepared.note(), precision.note()) if n)
    out = [Measurement(metric, unit_name, (None, value, None), step=step)
           for metric, unit_name, values in (("loss", task.loss_name, history.loss),
                                             ("param_grad_norm", "norm", history.grad_norm),
                                             ("input_grad_ratio", "ratio", history.grad_ratio))
           for step, value in enumerate(values)]
    timed = history.seconds[1:] or history.seconds
    times = measure.quantiles([s * 1e3 for s in timed])
    out.append(Measurement("time_per_train_step", "ms", times,
                           note="; ".join(n for n in (note, measure.noise_note(times[0], times[2])) if n)))
    out.append(Measurement("chance_loss", task.loss_name, (None, task.chance_loss, None)))
    if precision.scaled:
        out.append(Measurement("amp_skipped_steps", "count", (None, history.skipped_steps, None), note=note))
    if history.diverged_at is not None:
        out.append(Measurement("diverged_at_step", "step", (None, history.diverged_at, None),
                               note=f"loss {history.loss[-1]} at step {history.diverged_at}; training stopped there"))
        return out
    loss, accuracy = evaluate(model, tr, job.case.seq_len, precision, device, scenario.seed)
    out += [Measurement("eval_loss", task.loss_name, (None, loss, None), note=note),
            Measurement("eval_accuracy", "fraction", (None, accuracy, None), note=note)]
    return out
