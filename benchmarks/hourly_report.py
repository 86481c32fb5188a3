"""The markdown of bench_hourly.py's results: one table of runs and one of targets per case."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

ASSETS = ("raw_repositories", "user_item_matrix", "vae_input", "recvae_model", "model_registry_entry")
TARGET_SECONDS = 180.0
TARGET_SHARE = 1 / 8
TARGET_QUALITY = 0.99
TARGET_NEW_RECALL = 0.9
TARGET_HISTORY_COST = 1.5
TARGET_READ_SECONDS = 10.0
TARGET_RSS_MB = 2048.0
COMPARATOR = "H+3 full retrain, another init"  # bench_hourly --comparator
COMPARATOR_SEED_OFFSET = 1000
BOOTSTRAP_DRAWS = 2000


def _f(value: Any, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def _run_row(r: dict[str, Any]) -> str:
    raw, model = r["metadata"]["raw_repositories"], r["metadata"]["recvae_model"]
    steps = [r["steps"].get(a, 0.0) for a in ASSETS]
    checks = sum(v for k, v in r["steps"].items() if k not in ASSETS)
    start = model.get("warm_start_from_partition", "") if model.get("training_mode") == "warm" else ""
    cells = [r["label"], r["partition_key"], raw.get("read_mode"), _f(raw.get("stars_read"), 0),
             f"{model.get('training_mode')}{' from ' + start if start else ''}",
             f"{model.get('epochs')} (best {model.get('best_epoch')})",
             _f(model.get("vocabulary_overlap", ""), 4), *(_f(s) for s in steps), _f(checks),
             _f(r["wall_seconds"]), _f(r["peak_rss_mb"], 0), _f(model.get("validation_score", ""), 4),
             _f(model.get("score"), 4), _f(r["test"]["ndcg@100"], 4), _f(r["test"]["recall@20"], 4),
             _f(r.get("new_repositories", ""), 0), _f(r["test"].get("new_recall@100", ""), 4),
             _f(model.get("warm_users_per_epoch", ""), 0), _f(model.get("warm_new_items_trained", ""), 0),
             {True: "yes", False: "**no**"}.get(model.get("warm_weights_changed"), ""),
             str(model.get("warm_optimizer_moments", "")).split(":")[0],
             " / ".join(_f(x, 2) for x in r["load_1m"])]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def line(what: str, measured: str, met: bool) -> str:
    return f"| {what} | {measured} | {'yes' if met else '**no**'} |"


def _run(case: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((r for r in case["runs"] if r["label"] == label), None)


def _ratios(case: dict[str, Any], label: str = "H+3 warm") -> tuple[float, float]:
    """(NDCG@100, new-repository Recall@100) of the run `label` (warm H+3) over the full retrain of
    H+3, on the bench users."""
    warm3, retrain = _run(case, label)["test"], _run(case, "H+3 full retrain")["test"]
    return (warm3["ndcg@100"] / retrain["ndcg@100"],
            warm3["new_recall@100"] / max(retrain["new_recall@100"], 1e-12))


def paired_ratio(case: dict[str, Any], label: str, references: tuple[str, ...] = ("H+3 full retrain",)
                 ) -> tuple[float, float] | None:
    """(mean NDCG@100 of `label` / that of the mean of `references`, its standard error over the
    bench users): a paired bootstrap, users drawn with replacement and both models scored on the
    drawn users. None when a run lacks per-user scores (reports before they were kept) or the two
    scored different users."""
    runs = [_run(case, x) for x in (label, *references)]
    if any(r is None or "ndcg@100_per_user" not in r["test"] for r in runs):
        return None
    a, *refs = (np.asarray(r["test"]["ndcg@100_per_user"]) for r in runs)
    if any(len(x) != len(a) for x in refs):
        return None
    b = np.mean(refs, axis=0)
    draws = np.random.default_rng(0).integers(0, len(a), (BOOTSTRAP_DRAWS, len(a)))
    return float(a.mean() / b.mean()), float((a[draws].mean(1) / b[draws].mean(1)).std())


def _with_se(pair: tuple[float, float] | None) -> str:
    return "" if pair is None else f" (± {pair[1]:.3f} over bench users)"


def _targets(case: dict[str, Any]) -> list[str]:
    if case.get("plan") == "cost":
        return []
    runs = case["runs"]
    warm = [r for r in runs if r["label"].endswith("warm")]
    retrain, warm3 = _run(case, "H+3 full retrain"), _run(case, "H+3 warm")
    worst = max(r["wall_seconds"] for r in warm)
    read = max(r["steps"].get("raw_repositories", 0.0) for r in warm)
    pure_read = max(r["metadata"]["raw_repositories"].get("read_seconds", 0.0) for r in warm)
    rss = max(r["peak_rss_mb"] for r in warm)
    test_ratio = warm3["test"]["ndcg@100"] / retrain["test"]["ndcg@100"]
    val_ratio = warm3["metadata"]["recvae_model"]["score"] / retrain["metadata"]["recvae_model"]["score"]
    same_users = warm3["vae_input_sha256"] == retrain["vae_input_sha256"]
    modes = all(r["metadata"]["recvae_model"].get("training_mode") == "warm"
                and r["metadata"]["raw_repositories"].get("read_mode") == "incremental" for r in warm)

    return [
        "| target | measured | met |", "|---|---|---|",
        line("warm hours read incrementally and warm-started", "all three" if modes else "not all", modes),
        line(f"warm hourly run end to end <= {TARGET_SECONDS:.0f} s", f"{worst:.1f} s (slowest of 3)",
             worst <= TARGET_SECONDS),
        line("warm run <= 1/8 of the full run's time (full retrain of H+3)",
             f"{worst:.1f} / {retrain['wall_seconds']:.1f} s = 1/{retrain['wall_seconds'] / worst:.1f}",
             worst <= TARGET_SHARE * retrain["wall_seconds"]),
        line(f"new-repository Recall@100 of warm H+3 >= {TARGET_NEW_RECALL}x the full retrain's, bench users",
             f"{warm3['test']['new_recall@100']:.4f} / {retrain['test']['new_recall@100']:.4f} = "
             f"{_ratios(case)[1]:.3f}", _ratios(case)[1] >= TARGET_NEW_RECALL),
        line("every warm hour changed the weights",
             ", ".join(str(r["metadata"]["recvae_model"].get("warm_weights_changed")) for r in warm),
             all(r["metadata"]["recvae_model"].get("warm_weights_changed") is True for r in warm)),
        line(f"NDCG@100 of warm H+3 >= {TARGET_QUALITY}x the full retrain's, bench users (never trained on)",
             f"{warm3['test']['ndcg@100']:.4f} / {retrain['test']['ndcg@100']:.4f} = {test_ratio:.3f}"
             + _with_se(paired_ratio(case, "H+3 warm")), test_ratio >= TARGET_QUALITY),
        line(f"same, the pipeline's own score on the held-out users of H+3 (same split: {same_users})",
             f"{warm3['metadata']['recvae_model']['score']:.4f} / "
             f"{retrain['metadata']['recvae_model']['score']:.4f} = {val_ratio:.3f}",
             val_ratio >= TARGET_QUALITY and same_users),
        line(f"reading one hour of new stars <= {TARGET_READ_SECONDS:.0f} s",
             f"raw_repositories step {read:.1f} s at most (MongoDB read + merge {pure_read:.1f} s)",
             read <= TARGET_READ_SECONDS),
        line(f"peak RSS of a warm hourly run < {TARGET_RSS_MB / 1024:.0f} GB", f"{rss:,.0f} MB",
             rss < TARGET_RSS_MB),
        *_comparator_lines(case),
    ]


def _comparator_lines(case: dict[str, Any]) -> list[str]:
    """How far apart two full retrains of H+3 are on the bench users (no target: the resolution)."""
    other = _run(case, COMPARATOR)
    if other is None:
        return []
    ndcg, new = _ratios(case, COMPARATOR)
    both = paired_ratio(case, "H+3 warm", ("H+3 full retrain", COMPARATOR))
    return [f"| resolution: another full retrain of H+3 (init seed +{COMPARATOR_SEED_OFFSET}) / the full "
            f"retrain, bench users | NDCG@100 {other['test']['ndcg@100']:.4f} / "
            f"{_run(case, 'H+3 full retrain')['test']['ndcg@100']:.4f} = {ndcg:.3f}"
            f"{_with_se(paired_ratio(case, COMPARATOR))}; new-repository Recall@100 {new:.3f} "
            "| (no target) |",
            *([] if both is None else [
                f"| warm H+3 / the mean of the two full retrains (per user), bench users | NDCG@100 "
                f"{both[0]:.3f}{_with_se(both)} | (no target) |"])]


def markdown(report: dict[str, Any]) -> str:
    out = ["# Hourly runs: incremental reads and warm starts", "",
           f"Command: `{report['command']}`", "",
           f"Machine: {report['machine']}; `uptime` before: `{report['uptime_before']}`, after: "
           f"`{report['uptime_after']}`", "",
           "Every run is `hourly_training_job` (five assets + checks) in its own process against an "
           "embedded MongoDB and a local folder. *run s* is that process end to end (Python, Dagster and "
           "torch start-up included); the asset columns are Dagster's step times. *validation* and "
           "*score*: NDCG@100 on the pipeline's own held-out validation and test users of that hour "
           "(the same users every hour, chosen by a hash of their id, so no model in the warm chain "
           "trained on them; which of their stars are scored changes per hour); *bench*: "
           "users whose stars were never written to MongoDB, scored on 20% of their stars before the "
           "hour's end with the rest fed in. Load average (1 min) before / after each run in the last "
           "column.", ""]
    header = ["run", "hour (KST)", "read", "stars read", "training", "epochs", "overlap",
              *(f"{a} s" for a in ASSETS), "checks s", "run s", "peak RSS MB", "validation NDCG@100",
              "score (own test users)", "bench NDCG@100", "bench R@20", "new repos", "bench new R@100",
              "users / warm epoch", "new repos trained", "weights changed", "Adam moments", "load"]
    for case in report["cases"]:
        out += [f"## {case['name']}", "", case["description"] + ".", "",
                f"{case['stars_in_mongodb']:,} stars in MongoDB (loaded in {case['load_seconds']:.0f} s); "
                f"{case['test_users']} test users held out of MongoDB.", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += [_run_row(r) for r in case["runs"]]
        out += ["", *_targets(case), ""]
    return "\n".join(out + _summary(report["cases"])) + "\n"


def _mean_se(pairs: list[tuple[float, float] | None]) -> str:
    """The standard error of a mean over seeds from each seed's (independent) bench-user SE."""
    if not pairs or any(p is None for p in pairs):
        return ""
    return f" (± {np.sqrt(sum(p[1] ** 2 for p in pairs)) / len(pairs):.3f} over bench users)"


def _summary(cases: list[dict[str, Any]]) -> list[str]:
    """Targets across cases: the mean over the github seeds, and the cost against history."""
    out = ["## Across cases", "", "| target | measured | met |", "|---|---|---|"]
    seeds = [c for c in cases if c["name"].startswith("github") and c.get("plan", "hours") == "hours"]
    if seeds:
        ndcg = [_ratios(c)[0] for c in seeds]
        new = [_ratios(c)[1] for c in seeds]
        out.append(line(f"github, mean over {len(seeds)} seeds: new-repository Recall@100 of warm H+3 >= "
                        f"{TARGET_NEW_RECALL}x the full retrain's", " ".join(f"{x:.3f}" for x in new)
                        + f", mean {sum(new) / len(new):.3f}", sum(new) / len(new) >= TARGET_NEW_RECALL))
        out.append(line(f"github, mean over {len(seeds)} seeds: NDCG@100 of warm H+3 >= {TARGET_QUALITY}x",
                        " ".join(f"{x:.3f}" for x in ndcg) + f", mean {sum(ndcg) / len(ndcg):.3f}"
                        + _mean_se([paired_ratio(c, "H+3 warm") for c in seeds]),
                        sum(ndcg) / len(ndcg) >= TARGET_QUALITY))
        compared = [_ratios(c, COMPARATOR)[0] for c in seeds if _run(c, COMPARATOR) is not None]
        if compared:
            out.append(f"| resolution, {len(compared)} seeds: NDCG@100 of another full retrain of H+3 over "
                       f"the full retrain | {' '.join(f'{x:.3f}' for x in compared)}, mean "
                       f"{sum(compared) / len(compared):.3f} | (no target) |")
            both = [paired_ratio(c, "H+3 warm", ("H+3 full retrain", COMPARATOR)) for c in seeds]
            if all(x is not None for x in both):
                out.append(f"| {len(both)} seeds: NDCG@100 of warm H+3 over the mean of the two full "
                           f"retrains | {' '.join(f'{x[0]:.3f}' for x in both)}, mean "
                           f"{sum(x[0] for x in both) / len(both):.3f}{_mean_se(both)} | (no target) |")
    costs = [c for c in cases if c.get("plan") == "cost"]
    warm_seconds = {c["name"]: [r["wall_seconds"] for r in c["runs"] if r["label"].endswith("warm")]
                    for c in cases if c["name"].startswith("demo")}
    hour = [s for name, seconds in warm_seconds.items() if "x1 " in name or name == "demo" for s in seconds]
    if hour:
        out.append(line(f"a warm hour at the demo's 1.15M stars <= {TARGET_SECONDS:.0f} s end to end",
                        f"{max(hour):.1f} s (slowest of {len(hour)})", max(hour) <= TARGET_SECONDS))
    if len(costs) >= 2:
        small, large = costs[0], costs[-1]
        base, scaled = (warm_seconds[c["name"]] for c in (small, large))
        ratio = statistics.median(scaled) / statistics.median(base)
        out.append(line(f"a warm hour at {large['stars_in_mongodb']:,} stars <= {TARGET_HISTORY_COST}x one "
                        f"at {small['stars_in_mongodb']:,} (same stars per hour; medians of the warm hours)",
                        f"{' '.join(f'{x:.1f}' for x in scaled)} s / {' '.join(f'{x:.1f}' for x in base)} s: "
                        f"{statistics.median(scaled):.1f} / {statistics.median(base):.1f} = {ratio:.2f}x",
                        ratio <= TARGET_HISTORY_COST))
    rss = [r["peak_rss_mb"] for c in cases if c["name"].startswith("demo") and c["stars_in_mongodb"] < 2e6
           for r in c["runs"] if r["label"].endswith("warm")]
    if rss:
        out.append(line(f"peak RSS of a warm hour at 1.15M stars < {TARGET_RSS_MB / 1024:.0f} GB",
                        f"{max(rss):,.0f} MB", max(rss) < TARGET_RSS_MB))
    return out + [""]
