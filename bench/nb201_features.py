"""Graph features of every NB201 architecture from scratch (issue 6: "all 15625 NB201 archs take
under 10 minutes on 2 cores").

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/nb201_features.py [--graph eager|live|both] [--task cifar10]

Each graph is built the way the dataset importers build it (predictors.nb201.features_table): the
cell blocks are exported to ONNX once (torch -> ONNX), and each arch's features are composed from
them; disconnected archs get NaN rows. The cache is written to a temporary EDGEATLAS_HOME, so
nothing is read from an earlier run. Prints the wall time per graph against the 10-minute budget,
the host's load average beside it (shared, noisy host), and a spot check: the features of 20 random
archs computed again without the cache must equal the table's rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGET_S = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", choices=("eager", "live", "both"), default="both")
    ap.add_argument("--task", default="cifar10")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="edgeatlas-nb201feat-")
    os.environ["EDGEATLAS_HOME"] = home
    from predictors import nb201

    archs = [nb201.arch_str(x) for x in nb201.all_archs()]
    graphs = ("eager", "live") if a.graph == "both" else (a.graph,)
    try:
        for g in graphs:
            load0 = os.getloadavg()[0]
            t0 = time.monotonic()
            F = nb201.features_table(archs, a.task, graph=g)
            wall = time.monotonic() - t0
            ok = ~np.isnan(F[:, 0])
            pick = np.random.default_rng(0).choice(np.flatnonzero(ok), 20, replace=False)
            again = nb201.features_table([archs[i] for i in pick], a.task, use_cache=False, graph=g)
            same = bool(np.array_equal(again, F[pick]))
            print(
                f"nb201 {a.task} graph={g}: {len(archs)} archs ({int(ok.sum())} connected, {int((~ok).sum())} "
                f"disconnected -> NaN) in {wall:.1f} s; budget {BUDGET_S:.0f} s, ratio {wall / BUDGET_S:.3f}; "
                f"spot check of 20 archs recomputed without the cache: {'equal' if same else 'DIFFERENT'}; "
                f"load (1 min) before/after {load0:.2f}/{os.getloadavg()[0]:.2f}"
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
