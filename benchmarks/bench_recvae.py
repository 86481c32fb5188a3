"""Benchmarks for recvae: quality on GitHub stars, cost on a generated 50k x 20k matrix.

    python benchmarks/bench_recvae.py                      # everything, 3 seeds
    python benchmarks/bench_recvae.py --skip-large --seeds 0 --epochs 50

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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "github-stars-tiny"
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("ndcg@100", "recall@20", "recall@50")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 4) for k in KEYS}


def case_github(
    dataset: Path, seed: int, epochs: list[int], tune_gammas: list[float], tune_epochs: int
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

    for n in epochs:
        cpu0 = time.process_time()
        result = train_recvae(split.train, split.validation, RecVAEConfig(epochs=n, seed=seed), device="cpu")
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
        out[f"recvae_{n}"] = metrics
    if tune_gammas:
        # Same algorithm, hyper-parameters picked on validation for this small dataset: with 1.5k
        # training users a 500-user batch gives only 4 updates per pass, and a stronger KL weight
        # counters the over-fitting that follows the peak.
        trials = []
        for gamma in tune_gammas:
            cfg = RecVAEConfig(epochs=tune_epochs, batch_size=200, gamma=gamma, patience=20, seed=seed)
            result = train_recvae(split.train, split.validation, cfg, device="cpu")
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
    return out


def case_large(epochs: int, n_validation: int) -> dict:
    from recvae import RecVAEConfig, split_users, train_recvae
    from recvae.datasets import power_law_interactions

    t0 = time.perf_counter()
    inter = power_law_interactions(50_000, 20_000, 2_500_000, seed=0)
    gen_s = time.perf_counter() - t0
    split = split_users(inter, n_validation=n_validation, seed=0)
    cpu0 = time.process_time()
    result = train_recvae(split.train, split.validation, RecVAEConfig(epochs=epochs), device="cpu")
    cpu = time.process_time() - cpu0
    hist = result.history
    return {
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


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _markdown(report: dict) -> str:
    lines = [
        "# recvae benchmarks",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; torch threads: {report['threads']}; "
        f"OMP_WAIT_POLICY={report['omp_wait_policy'] or '(unset)'}; "
        f"`uptime` at start: `{report['uptime_start']}`, at end: `{report['uptime_end']}`",
        "",
    ]
    github = report.get("github")
    if github:
        seeds = [r["seed"] for r in github]
        lines += [
            f"## GitHub stars (Mult-VAE protocol, 300 validation / 300 test users), seeds {seeds}",
            "",
            "Test metrics, mean ± std over seeds (each seed: its own split and initialisation).",
            "",
            "| model | NDCG@100 | Recall@20 | Recall@50 | s / epoch (train+val) | cpu s / epoch |",
            "|---|---|---|---|---|---|",
        ]
        names = ["popularity", "ease"] + sorted(
            (k for k in github[0] if k.split("_")[-1].isdigit()), key=lambda k: int(k.split("_")[1])
        )
        if "recvae_tuned" in github[0]:
            names.append("recvae_tuned")
        for name in names:
            rows = [r[name] for r in github]
            cells = [_mean_std([r[k] for r in rows]) for k in KEYS]
            if name == "recvae_tuned":
                picks = ", ".join(f"{r['gamma']}" for r in rows)
                label = f"RecVAE, batch 200, gamma by validation ({picks}), patience 20"
                sec = _mean_std([r["s_per_epoch"] for r in rows])
                cpu = ""
            elif name.startswith("recvae_"):
                label = f"RecVAE, {rows[0]['epochs']} epochs (best by validation)"
                sec = _mean_std([r["s_per_epoch"] for r in rows])
                cpu = _mean_std([r["cpu_s_per_epoch"] for r in rows])
            else:
                label = name
                if name == "ease":
                    label = "EASE (lambda by validation: " + ", ".join(str(r["lam"]) for r in rows) + ")"
                sec = cpu = ""
            lines.append(f"| {label} | {' | '.join(cells)} | {sec} | {cpu} |")
        lines.append("")
        for r in github:
            best = {k: v["best_epoch"] for k, v in r.items() if k.startswith("recvae_") and "trials" not in k}
            lines.append(
                f"- seed {r['seed']}: best epochs {best}, load avg before/after "
                f"{r['load_avg_1m_before_after']}, peak {r['peak_mb']} MB"
            )
        lines.append("")
    large = report.get("large")
    if large:
        train_s = large["train_s_per_epoch"]
        lines += [
            "## Generated matrix: 50,000 users x 20,000 items, 2.5M interactions (power law)",
            "",
            "| measure | value | target | reference (ilya-shenbin/RecVAE) |",
            "|---|---|---|---|",
            f"| seconds per epoch, 3 encoder + 1 decoder pass | {', '.join(map(str, train_s))} "
            f"| <= 100 | 298 |",
            f"| validation scoring of {large['validation_users']} users, s | "
            f"{', '.join(map(str, large['eval_s_per_epoch']))} | | |",
            f"| CPU seconds per epoch (both cores together) | {large['cpu_s_per_epoch']} | | |",
            f"| peak memory (max RSS of the whole process), MB | {large['peak_mb']} | < 1536 | 1640 |",
            "",
            f"Load average (1 min) before/after: {large['load_avg_1m_before_after']}; "
            f"{large['train_users']} training users, {large['interactions']} interactions.",
            "",
        ]
    return "\n".join(lines)


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
    parser.add_argument("--output", type=Path, default=RESULTS / "recvae")
    parser.add_argument("--case", choices=["github", "large"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.case == "github":
        result = case_github(args.dataset, args.seed, args.epochs, args.tune_gammas, args.tune_epochs)
        print("RESULT " + json.dumps(result))
        return
    if args.case == "large":
        print("RESULT " + json.dumps(case_large(args.large_epochs, args.large_validation)))
        return

    common = ["--threads", str(args.threads)]
    report: dict = {
        "command": "python " + shlex.join(["benchmarks/bench_recvae.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
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
            result = _run_child([*child, *common], args.omp_wait_policy)
            print(json.dumps(result), flush=True)
            report["github"].append(result)
    if not args.skip_large:
        child = ["--case", "large", "--large-epochs", str(args.large_epochs)]
        child += ["--large-validation", str(args.large_validation)]
        report["large"] = _run_child([*child, *common], args.omp_wait_policy)
        print(json.dumps(report["large"]), flush=True)
    report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    args.output.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
