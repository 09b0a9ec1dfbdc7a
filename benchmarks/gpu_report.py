"""The tables of ``benchmarks/gpu.py``: its results (``gpu.json``) as markdown.

A GPU run and a smoke run write the same tables; a table with nothing measured keeps its
header and says why in one row.
"""

from __future__ import annotations

from collections.abc import Callable


def fmt(v, spec: str = ".2f") -> str:
    """A table cell: numbers formatted, None / missing as "-"."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def table(head: list[str], rows: list[list[str]], empty: str) -> list[str]:
    """A markdown table; one row saying ``empty`` when there is nothing to show."""
    rows = rows or [[empty] + ["-"] * (len(head) - 1)]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def rows(res: dict, kind: str) -> list[dict]:
    """Every row of that kind, in stage order."""
    return [r for s in res["stages"].values() for r in s.get("rows", [])
            if r.get("kind") == kind]


def why(res: dict, stage: str) -> str:
    """"not measured" and the stage's status."""
    s = res["stages"].get(stage)
    return f"not measured ({s['status']})" if s else "not measured (not run)"


def record(res: dict) -> list[str]:
    info = res.get("machine", {})
    card = info.get("gpu", "CPU (smoke run)")
    if "gpu_total_mib" in info:
        card += f", {info['gpu_total_mib']:.0f} MiB"
    return [f"- date: {info.get('date', '-')}; commit: {info.get('commit', '-')} "
            f"(uncommitted changes: {info.get('dirty', '-')})",
            f"- machine: `{info.get('uname', '-')}`, {info.get('nproc', '-')} CPUs, torch "
            f"{info.get('torch', '-')}; device: {card}",
            f"- run: {res['elapsed_s']:.0f} s of a {res['budget_s']:.0f} s budget", ""]


def stages(res: dict) -> list[str]:
    return table(["stage", "status", "seconds", "note"],
                 [[n, s["status"], fmt(s.get("seconds"), ".1f"), s.get("note", "")]
                  for n, s in res["stages"].items()], "none run")


def tests(res: dict) -> list[str]:
    return table(["test", "outcome", "note"],
                 [[r["test"], r["outcome"], r["note"]] for r in rows(res, "test")],
                 why(res, "tests"))


def render(res: dict) -> list[str]:
    bw = rows(res, "bandwidth")
    return ["Copy bandwidth (device-to-device clone, read + write): "
            + (f"{bw[0]['GBps']:.1f} GB/s ({bw[0]['copy_mib']} MiB)." if bw
               else why(res, "render")),
            "Bound = compulsory bytes (weights and their gradient, images and their gradient) "
            "/ that bandwidth; target: time / bound <= 3.", "",
            *table(["size px", "dates", "bands", "fwd+bwd s", "MiB moved", "bound s",
                    "time / bound"],
                   [[fmt(r["size"], "d"), fmt(r["T"], "d"), fmt(r["B"], "d"),
                     fmt(r["fwd_bwd_s"], ".4f"), fmt(r["bytes"] / 2 ** 20, ".0f"),
                     fmt(r["bound_s"], ".5f"), fmt(r["ratio"], ".1f")]
                    for r in rows(res, "render")], why(res, "render"))]


def fits(res: dict) -> list[str]:
    rendered = {r["case"]: r for r in rows(res, "fit_render")}  # 2.5 m render and PSNR

    def row(r: dict) -> list[str]:
        out = rendered.get(r["case"], {})
        ratio = None if r["peak_mib"] is None else r["peak_mib"] / r["plan_mib"]
        return [r["case"], r["settings"], fmt(r["size"], "d"), fmt(r["T"], "d"),
                fmt(r["B"], "d"), fmt(r["fit_s"], ".1f"), fmt(r["solve_s"], ".1f"),
                fmt(out.get("render_s"), ".1f"), fmt(r["steps"], "d"),
                fmt(r["target_s"], ".0f"), fmt(r["met"]), fmt(r["peak_mib"], ".0f"),
                f"{r['plan_mib']:.0f} / {r['route_plan_mib']:.0f}", fmt(ratio),
                fmt(out.get("psnr_db"))]

    return ["fit s: `fit_arrays` with `FitConfig()` (settings: those changed; solver loop, "
            "then the prediction and the anchor on the CPU); solver s: the optimiser loop "
            "alone; planned MiB: `plan_fit_memory` for this fit / for the pipeline's worst case "
            "(a change layer node per pixel).", "",
            *table(["case", "settings", "size px", "dates", "bands", "fit s", "solver s",
                    "render 2.5 m s", "steps", "target s", "met", "peak alloc MiB",
                    "planned MiB", "peak / plan", "PSNR dB"],
                   [row(r) for r in rows(res, "fit")], "not measured")]


def max_stack(res: dict) -> list[str]:
    plan = rows(res, "plan")
    if plan:
        p = plan[0]
        free = f" ({p['free_mib']:.0f} MiB free on the card)" if p["free_mib"] else ""
        head = (f"Plan: the largest square stack of {p['T']} dates x {p['B']} bands within "
                f"the budget of {p['budget_mib']:.0f} MiB{free} is {p['side']} px.")
    else:
        head = why(res, "max_stack")
    return [head, "",
            *table(["size px", "dates", "planned MiB", "plan says fits", "ran",
                    "peak alloc MiB", "seconds", "note"],
                   [[fmt(r["size"], "d"), fmt(r["T"], "d"), fmt(r["plan_mib"], ".0f"),
                     fmt(r["plan_says"]), fmt(r["ran"]), fmt(r["peak_mib"], ".0f"),
                     fmt(r["seconds"], ".1f"), r["note"]] for r in rows(res, "try")],
                   why(res, "max_stack"))]


def series(res: dict) -> list[str]:
    return table(["status", "size px", "dates", "fit s", "series s", "files"],
                 [[r["status"], fmt(r.get("size"), "d"), fmt(r.get("T"), "d"),
                   fmt(r.get("fit_s"), ".1f"), fmt(r.get("series_s"), ".1f"),
                   fmt(r.get("files"), "d")] for r in rows(res, "series")],
                 why(res, "series"))


def compiled(res: dict) -> list[str]:
    return table(["status", "size px", "dates", "eager s", "compiled s", "first call s",
                  "speedup", "max rel. diff"],
                 [[r["status"], fmt(r.get("size"), "d"), fmt(r.get("T"), "d"),
                   fmt(r.get("eager_s"), ".4f"), fmt(r.get("compiled_s"), ".4f"),
                   fmt(r.get("first_call_s"), ".1f"), fmt(r.get("speedup")),
                   fmt(r.get("max_rel_diff"), ".1e")]
                  for r in rows(res, "compile")[-1:]],  # the last word of the stage
                 why(res, "compile"))


SECTIONS: list[tuple[str, Callable[[dict], list[str]]]] = [
    ("Stages", stages),
    ("Tests (`pytest -m gpu`: CUDA against CPU)", tests),
    ("Render forward + backward against the memory-bandwidth bound", render),
    ("Default fits (simulated stacks, output at 2.5 m)", fits),
    ("Largest stack on the card: the memory plan against short fits", max_stack),
    ("Every-date series", series),
    ("torch.compile of the renderer", compiled),
]


def markdown(res: dict, level: int = 1) -> str:
    """The results as markdown under a heading of ``level``: the record, then the tables."""
    h = "#" * level
    md = [f"{h} GPU figures ({res['mode']})", "", *record(res)]
    for title, section in SECTIONS:
        md += [f"{h}# {title}", "", *section(res)]
    return "\n".join(md)
