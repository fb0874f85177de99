"""`neuralpower predict --gpu` for NeuSight's networks on each of its nine GPUs, timed end to end.

For every GPU of NeuSight's datasheets (the five it measured, whose bundled fp32 models `--gpu` loads, and the four
it predicts from their datasheets: H100, L4, A100-80GB PCIe, A100-SXM4-40GB, whose model `--gpu` carries from the
nearest bundled one) and every network NeuSight measured (the zoo's hf_* builds, at a batch and sequence length
NeuSight ran), one `neuralpower predict` process, as a user runs it: start, model loaded (or carried), network
built, predicted, printed. Printed: the slowest and median seconds per GPU, and the ratio of the slowest to the
one-second budget (issue "Whole networks measured by others": under a second each).

    python benchmarks/predict_gpus.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

GPUS = ("p100", "p4", "t4", "v100-pcie-32gb", "a100-pcie-40gb", "h100-sxm", "l4", "a100-pcie-80gb", "a100-40gb")
NETWORKS = (("hf_bert_large", 8, 512), ("hf_gpt2_large", 4, 1024), ("hf_gpt3_xl", 2, 2048), ("hf_gpt3_27", 2, 2048),
            ("hf_opt_13", 2, 2048))
BUDGET_S = 1.0


def main() -> int:
    worst = 0.0
    print(f"{'GPU':<16} {'slowest s':>10} {'median s':>9}")
    for gpu in GPUS:
        times = []
        for net, batch, seq in NETWORKS:
            start = time.perf_counter()
            command = [sys.executable, "-m", "neuralpower.cli", "predict", net, "--gpu", gpu, "--dtype", "fp32",
                       "--batch", str(batch), "--seq-len", str(seq)]
            proc = subprocess.run(command, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                print(f"{gpu} {net}: exit {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
                return 1
        worst = max(worst, max(times))
        print(f"{gpu:<16} {max(times):>10.2f} {statistics.median(times):>9.2f}")
    print(f"slowest / budget ({BUDGET_S:g} s): {worst / BUDGET_S:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
