"""The plan arithmetic of a GPU visit, without a GPU: what `neuralpower campaign` would plan on an H100/H200.

The plan of a real visit comes from the executor there; here a stand-in for the torch executor (which runs every
layer type) on a device of --memory-gb, with the same sweep, budget shares and timing protocol, prints the plan
and the efficiency goal (issue: 1,000 layer configurations with runtime and 300 with power, plus 8 networks at
3 batch sizes, in an 8-minute visit).

    python benchmarks/campaign_plan.py [--minutes 8] [--dtype fp16,fp32] [--target-ms 30] [--loops 5]
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from neuralpower.campaign import CampaignOptions, plan_campaign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--dtype", default="fp16,fp32")
    parser.add_argument("--target-ms", type=float, default=None)
    parser.add_argument("--loops", type=int, default=5)
    parser.add_argument("--memory-gb", type=float, default=80.0, help="device memory (H100: 80, H200: 141)")
    args = parser.parse_args()
    torch_like = SimpleNamespace(name="torch", device="cuda:0", supports=lambda layer: True)
    options = CampaignOptions(out="plan", executor="torch", dtypes=args.dtype.split(","), minutes=args.minutes,
                              target_ms=args.target_ms, loops=args.loops)
    plan = plan_campaign(torch_like, options, int(args.memory_gb * 2**30))
    print(plan.text())
    runtime = sum(plan.runtime_configs.values())
    power = sum(plan.power_expected.values())
    print(f"goal: >= 1000 configurations with runtime ({runtime}: {'met' if runtime >= 1000 else 'missed'}), "
          f">= 300 with power ({power}: {'met' if power >= 300 else 'missed'}), 8 networks x 3 batch sizes "
          f"({len(plan.networks)} x {len(plan.batches)})")


if __name__ == "__main__":
    main()
