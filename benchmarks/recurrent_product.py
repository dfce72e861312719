"""The recurrent product alone: ``kernel_runtime.matmul_packed`` on one core, GFLOP/s.

Times h W_hhᵀ (forward: ``pack_transposed(W_hh)``) and dg W_hh (backward: ``pack(W_hh)``) for
a stacked W_hh of [4d, d] at the course's batch sizes, with the register tile this processor
gets (``kernel_runtime.VECTOR_BYTES``, ``TILE_VECTORS``, ``PANEL_GROUP``), and prints a hash of
each result: every element is the same chain of fused multiply-adds whatever the tile, so the
hashes are the same on every tile and every processor.

    python benchmarks/recurrent_product.py
    python benchmarks/recurrent_product.py --tree /tmp/other-checkout   # another tree's tile
"""
import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

CASES = [  # (B, d, dtype)
    (1, 32, "float32"), (2, 32, "float32"), (1, 128, "float32"), (32, 128, "float32"),
    (64, 256, "float32"), (128, 512, "float32"), (1, 64, "float64"), (32, 128, "float64"),
    (64, 256, "float64"),
]


def measure(cases=CASES, rounds=7, seconds=0.05):
    import numpy as np

    from lstmkit import kernel_runtime

    rows = []
    for batch, hidden, dtype in cases:
        rng = np.random.default_rng(0)
        weight_hh = rng.standard_normal((4 * hidden, hidden)).astype(dtype)
        for direction, a, packed, columns in (
                ("forward", rng.standard_normal((batch, hidden)).astype(dtype),
                 kernel_runtime.pack_transposed(weight_hh), 4 * hidden),
                ("backward", rng.standard_normal((batch, 4 * hidden)).astype(dtype),
                 kernel_runtime.pack(weight_hh), hidden)):
            out = np.empty((batch, columns), dtype)
            kernel_runtime.matmul_packed(a, packed, out)
            digest = hashlib.sha1(out.tobytes()).hexdigest()[:12]
            begin, calls = time.perf_counter(), 0
            while time.perf_counter() - begin < seconds:
                kernel_runtime.matmul_packed(a, packed, out)
                calls += 1
            samples = []
            for _ in range(rounds):
                begin = time.perf_counter()
                for _ in range(calls):
                    kernel_runtime.matmul_packed(a, packed, out)
                samples.append((time.perf_counter() - begin) / calls)
            median = float(np.median(samples))
            rows.append({"batch": batch, "hidden": hidden, "dtype": dtype, "product": direction,
                         "microseconds": 1e6 * median, "gflops": 2 * batch * 4 * hidden * hidden / median / 1e9,
                         "sha1": digest})
    groups = getattr(kernel_runtime, "PANEL_GROUP", {})     # trees before issue 17 have none
    return {"vector_bytes": kernel_runtime.VECTOR_BYTES, "tile_vectors": kernel_runtime.TILE_VECTORS,
            "panel_group": {str(k): v for k, v in groups.items()}, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", help="import lstmkit from this checkout instead of this one")
    parser.add_argument("--json", metavar="PATH", help="also write the result to PATH")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    sys.path.insert(0, str(Path(args.tree).resolve() if args.tree else Path(__file__).resolve().parent.parent))
    result = measure()
    print(f"tile: {result['vector_bytes']}-byte vectors, {result['tile_vectors']} per row of 4, "
          f"panels at once for few rows: {result['panel_group'] or 'none'}")
    for row in result["rows"]:
        print(f"B = {row['batch']:3d}, d = {row['hidden']:3d}, {row['dtype']}, {row['product']:8s}: "
              f"{row['microseconds']:9.2f} µs {row['gflops']:7.1f} GFLOP/s  sha1 {row['sha1']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
