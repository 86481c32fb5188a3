"""Warm start versus full retrain on GitHub stars, with a simulated change of vocabulary.

    python benchmarks/bench_warm.py                                # seeds 0 1 2, shifts 0.03 0.2 0.5
    python benchmarks/bench_warm.py --seeds 0 --shifts 0.03 --warm-epochs 5

The dataset has no timestamps, so "the previous hour" is simulated on one Mult-VAE split (300
validation and 300 test users, the same held-out users for every model, so nothing leaks):

- previous model: trained on the training users with a random `--hidden-stars` share of their
  stars removed, and without the `shift` share of items ("new" items, not yet known);
- new hour: all training stars, all items but a random `--dropped-items` share ("dropped");
- full retrain: a cold model on the new hour (same settings as the previous model);
- warm: `warm_start(previous)` then `--warm-epochs` epochs (patience `--warm-patience`, 0 = none:
  validation dips for an epoch or two after a warm start, as Adam's moments start from zero);
- cold-short: a cold model trained for the same few epochs as the warm one;
- warm-random-rows: ablation, new items initialised like a fresh model (random rows, bias) instead
  of zero rows + log-frequency bias.

Test NDCG@100 / Recall@20 on the new hour's columns. Results go to benchmarks/results/warm.json/.md
with the command line and the load average (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recvae import (  # noqa: E402
    HeldOut,
    Popularity,
    Recommender,
    RecVAEConfig,
    evaluate,
    split_users,
    train_recvae,
    warm_start,
)
from recvae.datasets import load_github_stars  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "github-stars-tiny"
RESULTS = ROOT / "benchmarks" / "results"


def _columns(held: HeldOut, keep: np.ndarray) -> HeldOut:
    return HeldOut(held.user_ids, held.fold_in[:, keep], held.target[:, keep])


def _hide_stars(train: sp.csr_matrix, share: float, rng: np.random.Generator) -> sp.csr_matrix:
    coo = train.tocoo()
    keep = rng.random(coo.nnz) >= share
    out = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=train.shape)
    return out


def _test(model: torch.nn.Module, item_ids: np.ndarray, train: sp.csr_matrix, test: HeldOut) -> dict:
    rec = Recommender(model, item_ids, Popularity().fit(train).popularity)
    m = evaluate(rec, test.fold_in, test.target)
    return {"ndcg@100": round(m["ndcg@100"], 4), "recall@20": round(m["recall@20"], 4)}


def _randomise_new_rows(model: torch.nn.Module, new: np.ndarray, seed: int) -> None:
    """Ablation: new items drawn like a fresh model's (nn.Linear-style uniform) rows and biases."""
    gen = torch.Generator().manual_seed(seed)
    n_items, latent = model.decoder.weight.shape
    rows = torch.from_numpy(new)
    with torch.no_grad():
        enc = model.encoder.input_weight
        enc[rows] = (torch.rand(len(new), enc.shape[1], generator=gen) * 2 - 1) / math.sqrt(n_items)
        bound = 1 / math.sqrt(latent)
        model.decoder.weight[rows] = (torch.rand(len(new), latent, generator=gen) * 2 - 1) * bound
        model.decoder.bias[rows] = (torch.rand(len(new), generator=gen) * 2 - 1) * bound


def _run(label: str, fn) -> tuple:  # noqa: ANN001 - a thunk
    t0 = time.perf_counter()
    out = fn()
    seconds = round(time.perf_counter() - t0, 1)
    print(f"  {label}: {seconds} s", flush=True)
    return out, seconds


def case(inter, seed: int, shifts: list[float], args: argparse.Namespace) -> dict:  # noqa: ANN001
    rng = np.random.default_rng(seed + 100)
    split = split_users(inter, n_validation=300, n_test=300, seed=seed)
    assert split.test is not None
    n_items = split.train.shape[1]
    order = rng.permutation(n_items)
    n_dropped = int(round(args.dropped_items * n_items))
    dropped, rest = order[:n_dropped], order[n_dropped:]
    new_cols = np.setdiff1d(np.arange(n_items), dropped)
    new_train = split.train[:, new_cols]
    new_val, new_test = _columns(split.validation, new_cols), _columns(split.test, new_cols)
    new_ids = split.item_ids[new_cols]
    tuned = dict(batch_size=200, gamma=0.02, seed=seed)  # the pipeline's defaults (README)
    full_cfg = RecVAEConfig(epochs=args.full_epochs, patience=args.patience, **tuned)
    warm_cfg = RecVAEConfig(epochs=args.warm_epochs, patience=args.warm_patience or None, **tuned)

    print(f"seed {seed}: full retrain", flush=True)
    full, full_s = _run("full", lambda: train_recvae(new_train, new_val, full_cfg, device="cpu"))
    cold, cold_s = _run("cold-short", lambda: train_recvae(new_train, new_val, warm_cfg, device="cpu"))
    out: dict = {
        "seed": seed,
        "items_new_hour": len(new_cols),
        "dropped": n_dropped,
        "full": {
            **_test(full.model, new_ids, new_train, new_test),
            "seconds": full_s,
            "epochs": len(full.history),
            "best_epoch": full.best_epoch,
        },
        "cold_short": {
            **_test(cold.model, new_ids, new_train, new_test),
            "seconds": cold_s,
            "epochs": len(cold.history),
            "best_epoch": cold.best_epoch,
            "val_curve": [round(h.ndcg_at_100, 4) for h in cold.history],
        },
        "shifts": [],
    }
    for shift in shifts:
        # New items come from the items that are not dropped: the previous hour never saw them.
        new_items = np.sort(rest[: int(round(shift * n_items))])
        prev_cols = np.setdiff1d(np.arange(n_items), new_items)
        prev_train = _hide_stars(split.train[:, prev_cols], args.hidden_stars, rng)
        prev_val = _columns(split.validation, prev_cols)
        print(f"seed {seed} shift {shift}: previous model", flush=True)
        prev, prev_s = _run(
            "previous", lambda t=prev_train, v=prev_val: train_recvae(t, v, full_cfg, device="cpu")
        )
        prev_ids = split.item_ids[prev_cols]
        row = {"shift": shift, "previous_seconds": prev_s, "previous_epochs": len(prev.history)}
        for variant in ("warm", "warm_random_rows"):

            def go(variant: str = variant, prev=prev, prev_ids: np.ndarray = prev_ids) -> tuple:  # noqa: ANN001
                model, report = warm_start(prev.model, prev_ids, new_ids, train=new_train, config=warm_cfg)
                if variant == "warm_random_rows":
                    _randomise_new_rows(model, np.flatnonzero(~np.isin(new_ids, prev_ids)), seed)
                start = _test(model, new_ids, new_train, new_test)
                res = train_recvae(new_train, new_val, warm_cfg, device="cpu", initial_model=model)
                return report, start, res

            (report, start, res), secs = _run(variant, go)
            row[variant] = {
                **_test(res.model, new_ids, new_train, new_test),
                "seconds": secs,
                "epochs": len(res.history),
                "best_epoch": res.best_epoch,
                "epoch0": start,
                "val_curve": [round(res.initial_metrics["ndcg@100"], 4)]
                + [round(h.ndcg_at_100, 4) for h in res.history],
            }
            row["report"] = report.to_dict()
        out["shifts"].append(row)
    return out


def _markdown(report: dict) -> str:
    lines = [
        "# Warm start vs full retrain (GitHub stars, simulated hour)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; `uptime` at start: `{report['uptime_start']}`, at end: "
        f"`{report['uptime_end']}`",
        "",
        "Test NDCG@100 on the new hour's items, same 300 held-out test users for every model. "
        "`ratio` = NDCG@100 / full retrain's. Time: training wall seconds (warm: incl. warm_start).",
        "",
        "| seed | new items | kept/new/dropped | full: NDCG, epochs, s | warm epoch 0 "
        "| warm: NDCG, epochs, s | ratio | cold, same epochs | warm, random new rows |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        full, cold = r["full"], r["cold_short"]
        for s in r["shifts"]:
            w, a, rep = s["warm"], s["warm_random_rows"], s["report"]
            lines.append(
                f"| {r['seed']} | {s['shift']:.0%} | {rep['kept']}/{rep['new']}/{rep['dropped']} "
                f"| {full['ndcg@100']}, {full['epochs']}, {full['seconds']} | {w['epoch0']['ndcg@100']} "
                f"| {w['ndcg@100']}, {w['epochs']}, {w['seconds']} | {w['ndcg@100'] / full['ndcg@100']:.3f} "
                f"| {cold['ndcg@100']} | {a['ndcg@100']} (epoch 0: {a['epoch0']['ndcg@100']}) |"
            )
    lines += ["", "Validation NDCG@100 per epoch (warm: epoch 0 first):", ""]
    for r in report["results"]:
        lines.append(f"- seed {r['seed']} cold: {r['cold_short']['val_curve']}")
        for s in r["shifts"]:
            lines.append(
                f"- seed {r['seed']} shift {s['shift']} warm: {s['warm']['val_curve']}; "
                f"random rows: {s['warm_random_rows']['val_curve']}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--shifts",
        type=float,
        nargs="+",
        default=[0.03, 0.2, 0.5],
        help="share of the new hour's items unknown to the previous model",
    )
    parser.add_argument("--dropped-items", type=float, default=0.01)
    parser.add_argument("--hidden-stars", type=float, default=0.02)
    parser.add_argument("--full-epochs", type=int, default=150)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--warm-epochs", type=int, default=10)
    parser.add_argument("--warm-patience", type=int, default=0, help="0: none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "warm")
    args = parser.parse_args()
    if os.environ.get("OMP_WAIT_POLICY") is None:
        # Spinning OpenMP threads fight the other processes on a shared CPU; the variable only
        # takes effect if set before the process starts, hence the re-exec.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    torch.set_num_threads(args.threads)
    if not (args.dataset / "stars.csv").is_file():
        raise SystemExit(f"dataset not found: {args.dataset}")
    report: dict = {
        "command": "python " + shlex.join(["benchmarks/bench_warm.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}",
        "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": [],
    }
    inter = load_github_stars(args.dataset)
    for seed in args.seeds:
        report["results"].append(case(inter, seed, args.shifts, args))
        print(json.dumps(report["results"][-1]), flush=True)
    report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    args.output.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
