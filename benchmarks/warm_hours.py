"""Library-level hourly simulation on GitHub stars: does a warm hour learn what a full retrain would?

    python benchmarks/warm_hours.py --seeds 0 1 2                 # the policy of record (train_warm)
    python benchmarks/warm_hours.py --seeds 0 --variants legacy warm warm-zero-rows

github-stars-tiny has no timestamps, so the hours are simulated (per seed):
- a random 3% of the repositories are "new": none of their stars is in hour H;
- hour H holds about 91% of the stars: all but the new repositories' and a random share of the
  others; each of H+1, H+2 and H+3 reveals a random third of what was withheld;
- a fixed 10% of the users are test users: never trained on, scored with their stars before the
  hour's end (20% of them scored, the rest fed in; NDCG@100), and for new-repository recall with
  all their stars of new repositories as the target and their other stars fed in (Recall@100);
- each hour's matrix keeps repositories with >= 5 users and users with >= 5 repositories; the
  validation users are the same every hour (a hash of their id), as in the pipeline.

The full model of H and the full retrain of H+3 use the pipeline's full settings; each variant
then runs the warm hours H+1..H+3 from H's model. The dagster pipeline's own numbers come from
bench_hourly.py; this script isolates the library call so policies can be compared quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from machine import cpu_model

import recvae as rv
from batchrec_dagster.defs.assets.config import WARM_TRAINING

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "github-stars-tiny"
FULL = rv.RecVAEConfig(batch_size=200, gamma=0.02, epochs=150, patience=20)
LEGACY_WARM = replace(FULL, epochs=4, patience=2)  # the pipeline's warm run before train_warm
# the pipeline's warm epochs and encoder passes (and the full runs' learning rate); runs before
# f4f3fcd used 8 epochs of 3 passes, runs before 10f3104 5 of 3: each report's JSON records its own
WARM = {k: WARM_TRAINING[k] for k in ("epochs", "encoder_passes")}


def simulate(users: np.ndarray, repos: np.ndarray, seed: int, new_share: float = 0.03,
             first_hour_share: float = 0.91) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hour of each star 0..3, new repository ids, test user ids, is-test per star)."""
    rng = np.random.default_rng(seed)
    repo_ids = np.unique(repos)
    new = rng.choice(repo_ids, int(round(new_share * len(repo_ids))), replace=False)
    withheld = np.isin(repos, new)
    extra = int(round((1 - first_hour_share) * len(repos))) - int(withheld.sum())
    others = np.flatnonzero(~withheld)
    withheld[rng.choice(others, max(extra, 0), replace=False)] = True
    hour = np.zeros(len(repos), dtype=np.int64)
    hour[withheld] = rng.integers(1, 4, int(withheld.sum()))
    test_users = rng.choice(np.unique(users), len(np.unique(users)) // 10, replace=False)
    return hour, new, test_users, np.isin(users, test_users)


def hour_data(users, repos, hour, is_test, h, test_share=0.0):  # noqa: ANN001, ANN201
    """`test_share`: users also held out as the pipeline's own test users (it holds out 20%, at
    most 1000), so the warm chain trains on as few users as the pipeline's does."""
    keep = (hour <= h) & ~is_test
    inter = rv.build_interactions(users[keep], repos[keep])
    inter, _ = rv.filter_min_counts(inter, min_items_per_user=5, min_users_per_item=5)
    n = inter.n_users
    split = rv.split_users(inter, n_validation=min(1000, int(n * 0.2)),
                           n_test=min(1000, int(n * test_share)), seed=h,
                        user_order=rv.stable_user_order(inter.user_ids))
    return inter, split


def test_sets(users, repos, hour, is_test, h, item_ids, new_repos, seed):  # noqa: ANN001, ANN201
    """(fold-in, target) for NDCG@100 and (fold-in, target) for new-repository recall."""
    sel = is_test & (hour <= h)
    cols = np.searchsorted(item_ids, repos[sel]).clip(0, len(item_ids) - 1)
    known = item_ids[cols] == repos[sel]
    u, c = users[sel][known], cols[known]
    is_new_col = np.isin(item_ids, new_repos)
    rng = np.random.default_rng(seed + 1000)
    uniq = np.unique(u)
    rows = {x: i for i, x in enumerate(uniq)}
    r = np.array([rows[x] for x in u])
    target = rng.random(len(u)) < 0.2
    shape = (len(uniq), len(item_ids))

    def csr(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(mask.sum(), np.float32), (r[mask], c[mask])), shape=shape)

    new_star = is_new_col[c]
    return (csr(~target), csr(target)), (csr(~new_star), csr(new_star))


def score(model, item_ids, train, sets) -> dict:  # noqa: ANN001
    rec = rv.Recommender(model, item_ids, rv.Popularity().fit(train).popularity)
    (fi, tg), (nfi, ntg) = sets
    overall = rv.evaluate(rec, fi, tg)
    new = rv.evaluate(rec, nfi, ntg, ks=(100,))
    return {"ndcg@100": overall["ndcg@100"], "new_recall@100": new["recall@100"], "new_users": new["users"]}


def changed_rows(train_user_ids, users, hour, is_test, h) -> np.ndarray:  # noqa: ANN001
    changed = np.unique(users[(hour == h) & ~is_test])
    return np.flatnonzero(np.isin(train_user_ids, changed))


def _overridden(cfg: rv.RecVAEConfig, warm: rv.WarmConfig, spec: str) -> tuple:
    """`spec` "field=value,...": RecVAEConfig or WarmConfig fields (a variant such as
    `warm:learning_rate=1e-3,epochs=12` tries one setting on the same hours)."""
    for item in filter(None, spec.split(",")):
        key, value = item.split("=")
        target = cfg if hasattr(cfg, key) else warm
        kind = type(getattr(target, key))
        parsed = value.lower() == "true" if kind is bool else kind(value)
        if target is cfg:
            cfg = replace(cfg, **{key: parsed})
        else:
            warm = replace(warm, **{key: parsed})
    return cfg, warm


def hour_stars(split, users, repos, hour, is_test, h) -> sp.csr_matrix:  # noqa: ANN001
    """1 at each training star of `split` that arrived in hour `h`, 0 elsewhere (train's shape)."""
    sel = (hour == h) & ~is_test
    order = np.argsort(split.train_user_ids)
    rows = order[np.searchsorted(split.train_user_ids[order], users[sel]).clip(0, len(order) - 1)]
    cols = np.searchsorted(split.item_ids, repos[sel]).clip(0, len(split.item_ids) - 1)
    ok = (split.train_user_ids[rows] == users[sel]) & (split.item_ids[cols] == repos[sel])
    mask = sp.csr_matrix((np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=split.train.shape)
    return mask.multiply(split.train > 0).tocsr()


# variant fields that only this script knows (the library has no such option): `new_weight=w`,
# this hour's stars weigh w in the training matrix (the encoder's input and the multinomial loss
# both read it); `noise=s`, the previous model's weight matrices get N(0, s^2) noise before the
# warm run (the "perturb" of shrink and perturb, Ash & Adams 2020; the shrink is WarmConfig's)
BENCH_FIELDS = {"new_weight": 1.0, "noise": 0.0}


def _bench_fields(variant: str) -> tuple[str, dict[str, float]]:
    """("warm:rest", {field: value}) from "warm:new_weight=2,rest", defaults for fields not given."""
    name, _, spec = variant.partition(":")
    items = [x.split("=") for x in spec.split(",") if x]
    fields = {**BENCH_FIELDS, **{k: float(v) for k, v in items if k in BENCH_FIELDS}}
    rest = ",".join(f"{k}={v}" for k, v in items if k not in BENCH_FIELDS)
    return name + (f":{rest}" if rest else ""), fields


def _perturbed(model, noise: float, seed: int):  # noqa: ANN001, ANN202
    import copy

    import torch

    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(noise * torch.randn(p.shape, generator=generator))
    return model


def run_warm(variant: str, prev, split, changed, seed: int, this_hour=None) -> tuple:  # noqa: ANN001
    model, item_ids, moments = prev
    variant, bench = _bench_fields(variant)
    if bench["new_weight"] != 1.0:
        split = replace(split, train=(split.train + (bench["new_weight"] - 1) * this_hour).tocsr())
    if bench["noise"]:
        model = _perturbed(model, bench["noise"], seed)
    cfg = replace(FULL, seed=seed, **WARM, patience=None, time_budget_s=None)
    if variant == "legacy":
        start, _ = rv.warm_start(model, item_ids, split.item_ids, train=split.train)
        res = rv.train_recvae(split.train, split.validation, replace(LEGACY_WARM, seed=seed), device="cpu",
                           initial_model=start)
        return res.model, {"epochs": len(res.history), "kept_epoch": res.best_epoch,
                           "weights_changed": res.best_epoch > 0}
    variant, _, spec = variant.partition(":")
    pipeline = rv.WarmConfig(shrink=WARM_TRAINING["shrink"])
    warm = {"warm": pipeline, "warm-zero-rows": replace(pipeline, fit_new_rows=False),
            "warm-all-users": pipeline, "warm-replay2": replace(pipeline, replay_ratio=2.0),
            "warm-fresh-moments": pipeline}[variant]
    cfg, warm = _overridden(cfg, warm, spec)
    out = rv.train_warm(model, item_ids, split.train, split.item_ids, split.validation, cfg,
                     changed_users=None if variant == "warm-all-users" else changed, warm=warm, device="cpu",
                     moments=None if variant == "warm-fresh-moments" else moments)
    rep = out.report
    return out.training.model, {
        "epochs": len(out.training.history), "kept_epoch": rep.kept_epoch,
        "weights_changed": rep.weights_changed, "users_per_epoch": rep.users_per_epoch,
        "new_items": rep.new_items,
        "new_items_trained": rep.new_items_trained, "optimizer_moments": rep.optimizer_moments,
        "moments": out.training.moments}


TARGET_NDCG, TARGET_NEW_RECALL = 0.99, 0.9


def markdown(reports: list[dict]) -> str:
    """One table of every run, then the H+3 ratios against the full retrain per variant."""
    rows = [r for rep in reports for r in rep["rows"]]
    out = ["# Warm hours, the library call alone (github-stars-tiny, simulated hours)", "",
           *(f"Command: `{rep['command']}` (*warm*: {rep.get('warm_epochs', 8)} epochs of "
             f"{rep.get('warm_encoder_passes', 3)} encoder passes at learning rate "
             f"{rep.get('warm_learning_rate', 5e-4):g}, shrink {rep.get('warm_shrink', 1.0):g}); machine: "
             f"{rep['machine']}; load average before "
             f"{', '.join(f'{x:.2f}' for x in rep['load_before'])}, after "
             f"{', '.join(f'{x:.2f}' for x in rep['load_after'])}" for rep in reports), "",
           "How the hours are simulated and scored: the docstring of benchmarks/warm_hours.py. *new R@100*: "
           "Recall@100 of the test users' stars on repositories new since H (all of them the target, the "
           "user's other stars fed in); *legacy*: the warm run before train_warm (warm_start, 4 epochs, "
           "patience 2, best epoch with the starting model as epoch 0); *warm*: train_warm with the "
           "pipeline's warm settings, carrying Adam's moments from hour to hour (from H's full run on); "
           "*warm-fresh-moments*: the same with fresh moments every hour; *warm:field=value*: *warm* "
           "with that RecVAEConfig or WarmConfig field changed, or this script's BENCH_FIELDS "
           "(`new_weight=w`: the hour's stars weigh w in the training matrix; `noise=s`: N(0, s^2) noise "
           "on the previous model's weight matrices before each warm hour); "
           "*warm-zero-rows*: *warm* without placing "
           "new rows. "
           "Seconds are wall time on a shared machine.", "",
           "| seed | run | NDCG@100 | new R@100 | epochs | kept epoch | weights changed | users / epoch | "
           "new repos (trained) | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        new = f"{r['new_items']} ({r['new_items_trained']})" if "new_items" in r else ""
        out.append(f"| {r['seed']} | {r['run']} | {r['ndcg@100']:.4f} | {r['new_recall@100']:.4f} | "
                   f"{r.get('epochs', '')} | {r.get('kept_epoch', '')} | {r.get('weights_changed', '')} | "
                   f"{r.get('users_per_epoch', '')} | {new} | {r['seconds'] or 0:.1f} |")
    out += ["", "| variant | seeds | H+3 NDCG@100 / full retrain, per seed | mean | H+3 new R@100 / full "
                "retrain, per seed | mean | targets (>= 0.99x, >= 0.9x) |", "|---|---|---|---|---|---|---|"]
    variants = sorted({r["run"].split(" ", 1)[1] for r in rows if "ndcg_vs_full" in r})
    for variant in variants:
        mine = sorted((r for r in rows if r["run"] == f"H+3 {variant}"), key=lambda r: r["seed"])
        ndcg = [r["ndcg_vs_full"] for r in mine]
        new = [r["new_recall_vs_full"] for r in mine]
        met = sum(ndcg) / len(ndcg) >= TARGET_NDCG and sum(new) / len(new) >= TARGET_NEW_RECALL
        seeds = " ".join(str(r["seed"]) for r in mine)
        per_seed = " | ".join(f"{' '.join(f'{x:.3f}' for x in v)} | {sum(v) / len(v):.4f}"
                              for v in (ndcg, new))
        out.append(f"| {variant} | {seeds} | {per_seed} | "
                   f"{'yes' if met else '**no**'} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["legacy", "warm"])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/warm_hours_cache"))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "warm_hours")
    parser.add_argument("--test-share", type=float, default=0.0,
                        help="hold out this share of users as test users too, as the pipeline does (0.2)")
    parser.add_argument("--quiet-hours", type=int, default=0,
                        help="warm hours with no new stars after H+3, each scored against its full retrain")
    parser.add_argument("--combine", type=Path, nargs="+",
                        help="write --output's .md from these .json results (runs of this script) and stop")
    args = parser.parse_args()
    if args.combine:
        reports = [json.loads(p.read_text()) for p in args.combine]
        args.output.with_suffix(".json").write_text(json.dumps(reports, indent=1))
        args.output.with_suffix(".md").write_text(markdown(reports))
        return
    import torch

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", os.cpu_count() or 1)))
    table = np.loadtxt(args.dataset / "stars.csv", delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    table = table[table[:, 2] == 1]
    users, repos = table[:, 0], table[:, 1]
    args.cache.mkdir(parents=True, exist_ok=True)
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
              "load_before": os.getloadavg(), "warm_epochs": WARM["epochs"],
              "warm_encoder_passes": WARM["encoder_passes"], "warm_learning_rate": FULL.learning_rate,
              "warm_shrink": WARM_TRAINING["shrink"],
              "rows": []}
    from recvae import load_artifact
    from recvae.artifact import dump_artifact
    from recvae.checkpoint import dump_checkpoint, load_checkpoint

    def full(h: int, seed: int, split) -> tuple:  # noqa: ANN001
        tag = f"_t{args.test_share:g}" if args.test_share else ""
        path = args.cache / f"full_s{seed}_h{h}{tag}.pt"
        moments_path = path.with_suffix(".moments")
        if path.exists() and moments_path.exists():
            rec = load_artifact(path.read_bytes()).recommender
            return rec.model, rec.item_ids, 0.0, None, load_checkpoint(moments_path.read_bytes())
        t0 = time.perf_counter()
        res = rv.train_recvae(split.train, split.validation, replace(FULL, seed=seed), device="cpu")
        rec = rv.Recommender(res.model, split.item_ids, rv.Popularity().fit(split.train).popularity)
        path.write_bytes(dump_artifact(rec, config=res.config, metrics={}))
        moments_path.write_bytes(dump_checkpoint(res.moments))
        return res.model, split.item_ids, time.perf_counter() - t0, len(res.history), res.moments

    for seed in args.seeds:
        hour, new_repos, _, is_test = simulate(users, repos, seed)
        splits = {h: hour_data(users, repos, hour, is_test, h, args.test_share)[1] for h in range(4)}
        m0, ids0, s0, e0, moments0 = full(0, seed, splits[0])
        m3, ids3, s3, e3, _ = full(3, seed, splits[3])
        sets3 = test_sets(users, repos, hour, is_test, 3, splits[3].item_ids, new_repos, seed)
        ref = score(m3, ids3, splits[3].train, sets3)
        report["rows"].append({"seed": seed, "run": "H+3 full retrain", **ref, "seconds": s3, "epochs": e3})
        print(seed, "full H+3", ref, flush=True)
        for variant in args.variants:
            prev = (m0, ids0, moments0)
            for h in (1, 2, 3):
                sp_h = splits[h]
                changed = changed_rows(sp_h.train_user_ids, users, hour, is_test, h)
                t0 = time.perf_counter()
                model, info = run_warm(variant, prev, sp_h, changed, seed,
                                       hour_stars(sp_h, users, repos, hour, is_test, h))
                moments = info.pop("moments", None)
                seconds = time.perf_counter() - t0
                sets = test_sets(users, repos, hour, is_test, h, sp_h.item_ids, new_repos, seed)
                row = {"seed": seed, "run": f"H+{h} {variant}", "seconds": seconds,
                       **score(model, sp_h.item_ids, sp_h.train, sets), **info}
                if h == 3:
                    row["ndcg_vs_full"] = row["ndcg@100"] / ref["ndcg@100"]
                    row["new_recall_vs_full"] = row["new_recall@100"] / max(ref["new_recall@100"], 1e-9)
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                prev = (model, sp_h.item_ids, moments)
            # hours with no new stars after H+3, as at night: does the chain hold its quality?
            sp3 = splits[3]
            for k in range(1, args.quiet_hours + 1):
                t0 = time.perf_counter()
                model, info = run_warm(variant, prev, sp3, np.zeros(0, np.int64), seed,
                                       sp.csr_matrix(sp3.train.shape, dtype=np.float32))
                moments = info.pop("moments", None)
                row = {"seed": seed, "run": f"H+3+{k} {variant}", "seconds": time.perf_counter() - t0,
                       **score(model, sp3.item_ids, sp3.train, sets3), **info}
                row["quiet_ndcg_vs_full"] = row["ndcg@100"] / ref["ndcg@100"]
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                prev = (model, sp3.item_ids, moments)
    report["load_after"] = os.getloadavg()
    report["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
