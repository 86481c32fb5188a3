"""Markdown tables for benchmarks/bench_recvae.py's JSON report."""

from __future__ import annotations

import numpy as np

KEYS = ("ndcg@100", "recall@20", "recall@50")


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def render_markdown(report: dict) -> str:
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
            (k for k in github[0] if k.startswith("recvae_") and k.split("_")[1].isdigit()),
            key=lambda k: (int(k.split("_")[1]), k),
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
                label += ", bf16 mixed precision" if name.endswith("_bf16") else ""
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
    runs = [r for r in (report.get("large"), report.get("large_bf16")) if r]
    if runs:
        lines += _large_markdown(runs)
    return "\n".join(lines)


def _large_markdown(runs: list[dict]) -> list[str]:
    def cells(key: str) -> str:
        return " | ".join(
            ", ".join(map(str, r[key])) if isinstance(r[key], list) else str(r[key]) for r in runs
        )

    head = " | ".join("bf16 mixed precision" if r.get("mixed_precision") else "float32" for r in runs)
    large = runs[0]
    lines = [
        "## Generated matrix: 50,000 users x 20,000 items, 2.5M interactions (power law)",
        "",
        f"Device: {large.get('device', 'cpu')}.",
        "",
        f"| measure | {head} | target | reference (ilya-shenbin/RecVAE) |",
        "|---|" + "---|" * len(runs) + "---|---|",
        f"| seconds per epoch, 3 encoder + 1 decoder pass | {cells('train_s_per_epoch')} | <= 100 | 298 |",
        f"| validation scoring of {large['validation_users']} users, s | {cells('eval_s_per_epoch')} | | |",
        f"| CPU seconds per epoch (all threads together) | {cells('cpu_s_per_epoch')} | | |",
        f"| peak memory (max RSS of the whole process), MB | {cells('peak_mb')} | < 1536 | 1640 |",
    ]
    if "val_ndcg_per_epoch" in large:
        lines.append(f"| validation NDCG@100 per epoch | {cells('val_ndcg_per_epoch')} | | |")
    if large.get("device_peak_mb") is not None:
        lines.append(f"| peak GPU memory (torch allocator), MB | {cells('device_peak_mb')} | | |")
    loads = "; ".join(str(r["load_avg_1m_before_after"]) for r in runs)
    lines += [
        "",
        f"Load average (1 min) before/after: {loads}; "
        f"{large['train_users']} training users, {large['interactions']} interactions.",
        "",
    ]
    return lines
