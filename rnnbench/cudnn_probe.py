"""Which algorithm cuDNN runs for each shape of a run, found in a process of its own.

The answer is read from the kernel names of one profiled call of the shape's first PROBE_STEPS
steps (profile.cudnn_algorithm, launches.cudnn_algorithm): PyTorch picks cuDNN's algorithm from the
hidden size, batch, dtype and pass, not from T beyond 40 steps (get_algo in
aten/src/ATen/native/cudnn/RNN.cpp). The probes run in a child process, all at the start of a run,
because a profiling session can leave CUPTI attached to the process that ran it and slow every
later launch there (pytorch/pytorch#144455; PyTorch tears CUPTI down now, except where CUDA graphs
are used, as the stepwise backend's are): the process that measures never profiles.

    python -m rnnbench.cudnn_probe < shapes.json   # what algorithms() runs: JSON in, JSON out
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from rnnbench.launches import ALGORITHM_NOTE
from rnnbench.schema import Case

PROBE_STEPS = 256
TIMEOUT_S = 600


def shape_key(backend: str, dtype: str, mode: str, case: Case) -> tuple:
    """What cuDNN's choice depends on: the job without its sequence length beyond PROBE_STEPS."""
    return (backend, dtype, mode, dataclasses.replace(case, seq_len=min(case.seq_len, PROBE_STEPS)))


def algorithms(shapes: list[tuple], device: str, nonlinearity: str, seed: int) -> dict[tuple, str]:
    """shape_key -> the cuDNN algorithm note, from one child process; a failed probe says so."""
    shapes = list(dict.fromkeys(shapes))
    if not shapes:
        return {}
    request = {"device": device, "nonlinearity": nonlinearity, "seed": seed,
               "shapes": [[b, d, m, dataclasses.asdict(c)] for b, d, m, c in shapes]}
    try:
        proc = subprocess.run([sys.executable, "-m", "rnnbench.cudnn_probe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        notes = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        notes, proc = None, err
    if notes is None:
        why = getattr(proc, "stderr", "") or str(proc)
        last = why.strip().splitlines()[-1] if why.strip() else f"exit code {getattr(proc, 'returncode', '?')}"
        return {shape: f"{ALGORITHM_NOTE}unknown (the probe failed: {last[:200]})" for shape in shapes}
    return dict(zip(shapes, notes))


def main() -> None:
    import torch

    from rnnbench.profile import cudnn_algorithm
    request = json.load(sys.stdin)
    device = torch.device(request["device"])
    notes = []
    for backend, dtype, mode, case in request["shapes"]:
        try:
            notes.append(cudnn_algorithm(backend, Case(**case), dtype, mode, device, request["nonlinearity"],
                                         request["seed"]))
        except Exception as err:  # one shape that cannot be profiled says why; the others go on
            notes.append(f"{ALGORITHM_NOTE}unknown (profiling failed: {type(err).__name__}: {str(err)[:200]})")
    print(json.dumps(notes))


if __name__ == "__main__":
    main()
