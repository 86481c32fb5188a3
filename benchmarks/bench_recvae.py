"""Benchmarks for recvae: quality on GitHub stars, cost on a generated 50k x 20k matrix.

    python benchmarks/bench_recvae.py                      # everything, 3 seeds
    python benchmarks/bench_recvae.py --skip-large --seeds 0 --epochs 50
    python benchmarks/bench_recvae.py --mixed-precision    # + the same RecVAE runs in bf16
    python benchmarks/bench_recvae.py --device cuda ...    # on a GPU (benchmarks/gpu_check.sh)

Each case runs in its own subprocess so its peak memory (ru_maxrss) is its own. Results go to
benchmarks/results/recvae.json and .md together with the command line and the machine's load
average, because the CPU is shared and wall-clock timings move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from recvae_markdown import KEYS, render_markdown

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "github-stars-tiny"
RESULTS = ROOT / "benchmarks" / "results"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 4) for k in KEYS}


def _device_peak_mb(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def case_github(
    dataset: Path,
    seed: int,
    epochs: list[int],
    tune_gammas: list[float],
    tune_epochs: int,
    device: str = "cpu",
    mixed_precision: bool = False,
) -> dict:
    from recvae import (
        EASE,
        Popularity,
        Recommender,
        RecVAEConfig,
        choose_ease_lambda,
        evaluate,
        split_users,
        train_recvae,
    )
    from recvae.datasets import load_github_stars

    inter = load_github_stars(dataset)
    split = split_users(inter, n_validation=300, n_test=300, seed=seed)
    assert split.test is not None
    test = split.test
    out: dict = {"seed": seed, "train_users": split.train.shape[0], "items": split.train.shape[1]}

    pop = Popularity().fit(split.train)
    out["popularity"] = _pick(evaluate(pop, test.fold_in, test.target))

    t0 = time.perf_counter()
    lam, by_lambda = choose_ease_lambda(split.train, split.validation)
    ease = EASE(lam).fit(split.train)
    out["ease"] = _pick(evaluate(ease, test.fold_in, test.target))
    out["ease"].update(lam=lam, seconds_with_search=round(time.perf_counter() - t0, 1))
    out["ease_validation_by_lambda"] = {str(k): round(v, 4) for k, v in by_lambda.items()}

    runs = [(n, mp) for n in epochs for mp in ([False, True] if mixed_precision else [False])]
    for n, mp in runs:
        cpu0 = time.process_time()
        cfg = RecVAEConfig(epochs=n, seed=seed, mixed_precision=mp)
        result = train_recvae(split.train, split.validation, cfg, device=device)
        cpu = time.process_time() - cpu0
        rec = Recommender(result.model, split.item_ids, pop.popularity)
        metrics = _pick(evaluate(rec, test.fold_in, test.target))
        hist = result.history
        metrics.update(
            epochs=n,
            best_epoch=result.best_epoch,
            s_per_epoch=round(float(np.mean([h.seconds for h in hist])), 3),
            train_s_per_epoch=round(float(np.mean([h.train_seconds for h in hist])), 3),
            cpu_s_per_epoch=round(cpu / len(hist), 3),
            val_ndcg_best=round(result.best_metrics["ndcg@100"], 4),
        )
        out[f"recvae_{n}" + ("_bf16" if mp else "")] = metrics
    if tune_gammas:
        # Same algorithm, hyper-parameters picked on validation for this small dataset: with 1.5k
        # training users a 500-user batch gives only 4 updates per pass, and a stronger KL weight
        # counters the over-fitting that follows the peak.
        trials = []
        for gamma in tune_gammas:
            cfg = RecVAEConfig(epochs=tune_epochs, batch_size=200, gamma=gamma, patience=20, seed=seed)
            result = train_recvae(split.train, split.validation, cfg, device=device)
            rec = Recommender(result.model, split.item_ids, pop.popularity)
            trial = _pick(evaluate(rec, test.fold_in, test.target))
            trial.update(
                gamma=gamma,
                batch_size=200,
                best_epoch=result.best_epoch,
                epochs_run=len(result.history),
                val_ndcg_best=round(result.best_metrics["ndcg@100"], 4),
                s_per_epoch=round(float(np.mean([h.seconds for h in result.history])), 3),
            )
            trials.append(trial)
        out["recvae_tuned_trials"] = trials
        out["recvae_tuned"] = max(trials, key=lambda t: t["val_ndcg_best"])
    out["peak_mb"] = round(_peak_mb(), 1)
    out["device"], out["device_peak_mb"] = device, _device_peak_mb(device)
    return out


def case_large(epochs: int, n_validation: int, device: str = "cpu", mixed_precision: bool = False) -> dict:
    from recvae import RecVAEConfig, split_users, train_recvae
    from recvae.datasets import power_law_interactions

    t0 = time.perf_counter()
    inter = power_law_interactions(50_000, 20_000, 2_500_000, seed=0)
    gen_s = time.perf_counter() - t0
    split = split_users(inter, n_validation=n_validation, seed=0)
    cpu0 = time.process_time()
    cfg = RecVAEConfig(epochs=epochs, mixed_precision=mixed_precision)
    result = train_recvae(split.train, split.validation, cfg, device=device)
    cpu = time.process_time() - cpu0
    hist = result.history
    return {
        "device": device,
        "mixed_precision": mixed_precision,
        "device_peak_mb": _device_peak_mb(device),
        "val_ndcg_per_epoch": [round(h.ndcg_at_100, 4) for h in hist],
        "users": inter.n_users,
        "items": inter.n_items,
        "interactions": int(inter.matrix.nnz),
        "train_users": split.train.shape[0],
        "validation_users": split.validation.n_users,
        "generate_s": round(gen_s, 1),
        "epochs": len(hist),
        "train_s_per_epoch": [round(h.train_seconds, 1) for h in hist],
        "eval_s_per_epoch": [round(h.eval_seconds, 1) for h in hist],
        "cpu_s_per_epoch": round(cpu / len(hist), 1),
        "peak_mb": round(_peak_mb(), 1),
    }


def _run_child(args: list[str], omp_wait_policy: str) -> dict:
    cmd = [sys.executable, __file__, *args]
    env = dict(os.environ)
    if omp_wait_policy:
        # OpenMP threads that spin while waiting fight other processes for the shared cores;
        # it has to be set before the child starts, hence a subprocess per case.
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    load_before = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark case failed: {shlex.join(cmd)}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    result["load_avg_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[50, 150])
    parser.add_argument(
        "--tune-gammas",
        type=float,
        nargs="*",
        default=[0.005, 0.01, 0.02],
        help="validation grid for the tuned RecVAE row (batch 200); none to skip",
    )
    parser.add_argument("--tune-epochs", type=int, default=150)
    parser.add_argument("--large-epochs", type=int, default=2)
    parser.add_argument("--large-validation", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait-policy", default="PASSIVE", help="'' to leave it unset")
    parser.add_argument("--skip-github", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--mixed-precision", action="store_true", help="also run each RecVAE case in bf16 mixed precision"
    )
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # a child's precision
    parser.add_argument("--output", type=Path, default=RESULTS / "recvae")
    parser.add_argument("--case", choices=["github", "large"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.case == "github":
        result = case_github(
            args.dataset,
            args.seed,
            args.epochs,
            args.tune_gammas,
            args.tune_epochs,
            args.device,
            args.mixed_precision,
        )
        print("RESULT " + json.dumps(result))
        return
    if args.case == "large":
        result = case_large(args.large_epochs, args.large_validation, args.device, args.bf16)
        print("RESULT " + json.dumps(result))
        return

    common = ["--threads", str(args.threads), "--device", args.device]
    gpu = f", {torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") else ""
    report: dict = {
        "command": "python " + shlex.join(["benchmarks/bench_recvae.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{gpu}, "
        f"torch {torch.__version__}",
        "threads": args.threads,
        "omp_wait_policy": args.omp_wait_policy,
        "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    if not args.skip_github:
        if not (args.dataset / "stars.csv").is_file():
            raise SystemExit(f"dataset not found: {args.dataset}")
        report["github"] = []
        for seed in args.seeds:
            epochs = [str(e) for e in args.epochs]
            child = ["--case", "github", "--seed", str(seed), "--dataset", str(args.dataset)]
            child += ["--epochs", *epochs, "--tune-epochs", str(args.tune_epochs)]
            child += ["--tune-gammas", *map(str, args.tune_gammas)]
            child += ["--mixed-precision"] if args.mixed_precision else []
            result = _run_child([*child, *common], args.omp_wait_policy)
            print(json.dumps(result), flush=True)
            report["github"].append(result)
    if not args.skip_large:
        child = ["--case", "large", "--large-epochs", str(args.large_epochs)]
        child += ["--large-validation", str(args.large_validation)]
        report["large"] = _run_child([*child, *common], args.omp_wait_policy)
        print(json.dumps(report["large"]), flush=True)
        if args.mixed_precision:
            report["large_bf16"] = _run_child([*child, *common, "--bf16"], args.omp_wait_policy)
            print(json.dumps(report["large_bf16"]), flush=True)
    report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    args.output.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
