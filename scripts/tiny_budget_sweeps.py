#!/usr/bin/env python3
"""Writes configs/sweeps/tiny-5min-*.json: recipes for configs/tiny.json at a fixed CPU budget.

Each run's train.max_steps is what the budget buys at its shape: BUDGET_S seconds of one CPU
thread divided by the shape's measured cost per step (COST_S, CPU user time of one training step
at train.threads=1; bench/RESULTS.md, "configs/tiny.json at a fixed CPU budget"). The sweeps run on
a GPU (train.device auto), where a run takes seconds and the loss matches the CPU's; the final
evaluation covers the whole val split (train.eval_batches 64 > the ~31 batches it holds).

    scripts/tiny_budget_sweeps.py            # rewrite the sweep files
"""
import json
import math
import pathlib

# One-thread CPU seconds of training available: 2 cores x ~285 s of the 5 minutes (the rest:
# evaluations), 1.9x thread scaling.
BUDGET_S = 540.0

# CPU seconds per step at train.threads=1 by (n_layer, d_model, d_ff, seq_len, batch_size):
# measured ones, and a model (per-token head cost linear in d_model, per-layer cost from the
# measured 4 -> 6 -> 8 layer steps) for the rest.
HEAD_S = {64: 0.39, 96: 0.54, 128: 0.70, 160: 0.86, 192: 1.01}   # embeddings, head GEMMs, loss, AdamW, per 2048 tokens
LAYER_S = {64: 0.032, 96: 0.058, 128: 0.09, 160: 0.126, 192: 0.165}  # one block at d_ff 4C, seq 128, per 2048 tokens
STEP_S = 0.03  # per optimizer step, independent of the batch


def cost(n_layer, d_model, d_ff=0, seq_len=128, batch=16):
    tok = batch * seq_len / 2048.0
    ff = d_ff or 4 * d_model
    layer = LAYER_S[d_model] * (0.75 + 0.25 * seq_len / 128.0) * (4 * d_model + 2 * ff) / (12 * d_model)
    return STEP_S + tok * (HEAD_S[d_model] + n_layer * layer)


def old_steps(*shape):  # the first sweeps' steps: from the model alone
    return int(BUDGET_S / cost(*shape) / 10) * 10


# Measured after the first sweeps (train.threads=1, OPENBLAS_CORETYPE=SKYLAKEX, the median of 8
# steps' CPU time; bench/RESULTS.md), used where present.
MEASURED_S = {(4, 128, 0, 128, 16): 1.21, (4, 96, 0, 128, 16): 0.905, (4, 64, 0, 128, 16): 0.67,
              (6, 96, 0, 128, 16): 0.965, (6, 64, 0, 128, 16): 0.76}


def steps(*shape):
    full = tuple(shape) + (0, 128, 16)[len(shape) - 2:]
    return int(BUDGET_S / MEASURED_S.get(full, cost(*shape)) / 10) * 10


def shape_set(n_layer, d_model, n_head, d_ff=0, seq_len=128, batch=16, measured=False):
    s = steps(n_layer, d_model, d_ff, seq_len, batch) if measured else old_steps(n_layer, d_model, d_ff, seq_len, batch)
    return {"model.n_layer": n_layer, "model.d_model": d_model, "model.n_head": n_head, "model.d_ff": d_ff,
            "model.seq_len": seq_len, "train.batch_size": batch, "train.max_steps": s}


COMMON = {"train.eval_batches": 64, "train.log_every": 10, "train.checkpoint_every": 0}
# The first round ran on configs/tiny.json as it was then (learned positions, AdamW beta2 0.95,
# 4 layers of d_model 128); its files pin what has changed since.
ROUND1 = dict(COMMON, **{"model.pos": "learned", "optim.beta2": 0.95})


def write(name, description, body):
    doc = {"description": description, "base": "configs/tiny.json"}
    doc.update(body)
    path = pathlib.Path(__file__).resolve().parent.parent / "configs" / "sweeps" / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    n = 1
    for v in body.get("grid", {}).values():
        n *= len(v)
    n *= len(body.get("list", [None]))
    print(f"{path.name}: {n} runs")


BASE = shape_set(4, 128, 4)

if __name__ == "__main__":
    shapes = [shape_set(*s) for s in [
        (4, 128, 4), (2, 128, 4), (3, 128, 4), (6, 128, 4), (8, 128, 4),
        (4, 96, 3), (6, 96, 3), (8, 96, 3),
        (4, 160, 5), (6, 160, 5), (4, 192, 6), (6, 192, 6),
        (4, 64, 2), (6, 64, 2), (4, 128, 2), (4, 128, 8), (4, 128, 4, 256), (4, 128, 4, 1024), (6, 128, 4, 256),
        (4, 128, 4, 0, 64, 32), (4, 128, 4, 0, 256, 8), (4, 128, 4, 0, 128, 8), (4, 128, 4, 0, 128, 32),
        (6, 128, 4, 0, 256, 8),
    ]]
    for s in shapes:
        s["train.eval_every"] = s["train.max_steps"] // 5
        s["optim.warmup_steps"] = max(10, s["train.max_steps"] // 25)
    write("tiny-5min-shape",
          "configs/tiny.json's model shape, seq_len and batch at a fixed CPU budget (each run's max_steps "
          "is ~540 one-thread CPU seconds at its shape's measured cost; scripts/tiny_budget_sweeps.py). "
          "Runs on a GPU in seconds.",
          {"set": ROUND1, "list": shapes})
    shape_lr = []
    for sh in [(4, 96, 3), (6, 96, 3), (3, 128, 4), (6, 128, 4), (4, 160, 5), (4, 128, 4, 0, 64, 32)]:
        for lr, mlr in [(0.02, 0.02), (0.01, 0.03), (0.02, 0.03)]:
            e = shape_set(*sh)
            e.update({"train.eval_every": e["train.max_steps"] // 5, "optim.warmup_steps": max(10, e["train.max_steps"] // 25),
                      "optim.lr": lr, "optim.muon_lr": mlr})
            shape_lr.append(e)
    write("tiny-5min-shape-lr",
          "A few shapes of tiny-5min-shape at higher AdamW and Muon learning rates (same CPU budget).",
          {"set": ROUND1, "list": shape_lr})
    s = BASE["train.max_steps"]
    base = dict(ROUND1, **BASE, **{"train.eval_every": s // 5, "optim.warmup_steps": s // 25})
    write("tiny-5min-lr",
          "Muon lr x AdamW lr for configs/tiny.json at the fixed CPU budget of tiny-5min-shape.",
          {"set": base, "grid": {"optim.muon_lr": [0.01, 0.02, 0.03, 0.05], "optim.lr": [0.005, 0.01, 0.02, 0.03]}})
    sched = []
    for w in [0, s // 25, s // 10]:
        sched += [{"optim.warmup_steps": w, "optim.schedule": "cosine", "optim.min_lr_ratio": 0.1},
                  {"optim.warmup_steps": w, "optim.schedule": "cosine", "optim.min_lr_ratio": 0.0},
                  {"optim.warmup_steps": w, "optim.schedule": "linear", "optim.min_lr_ratio": 0.0},
                  {"optim.warmup_steps": w, "optim.schedule": "linear", "optim.min_lr_ratio": 0.0,
                   "optim.warmdown_steps": s // 2},
                  {"optim.warmup_steps": w, "optim.schedule": "linear", "optim.min_lr_ratio": 0.1,
                   "optim.warmdown_steps": s // 3}]
    sched += [{"optim.weight_decay": 0.0}, {"optim.weight_decay": 0.3}, {"optim.beta2": 0.99},
              {"optim.beta1": 0.8}, {"optim.grad_clip": 0.0}, {"optim.muon_momentum": 0.9},
              {"optim.ns_schedule": "polar-express"}, {"optim.eps": 1e-10}]
    body_set = {k: v for k, v in base.items() if k != "optim.warmup_steps"}
    for e in sched[15:]:
        e["optim.warmup_steps"] = s // 25
    write("tiny-5min-schedule",
          "Warm-up, decay shape and floor, and other optimizer settings of configs/tiny.json at the "
          "fixed CPU budget of tiny-5min-shape.",
          {"set": body_set, "list": sched})
    arch = [{"model.pos": "rope"}, {"model.activation": "relu2"}, {"model.norm": "rmsnorm"},
            {"model.qk_norm": True}, {"model.bias": False}, {"model.tie_embeddings": False},
            {"model.tie_embeddings": False, "optim.lr": 0.02}, {"model.logit_softcap": 30.0},
            {"model.init_std": 0.01}, {"model.init_std": 0.04},
            {"model.pos": "rope", "model.activation": "relu2", "model.norm": "rmsnorm", "model.qk_norm": True,
             "model.bias": False},
            {"model.pos": "rope", "model.qk_norm": True},
            {"optim.muon_include": "wte"}, {"data.sampling": "sequential"}]
    # Second round: rotary positions and AdamW beta2 0.99 (the two largest gains of the first round)
    # on the best shapes, steps from the measured costs; also at 0.8x the budget.
    combo = {"model.pos": "rope", "optim.beta2": 0.99}
    def entry(shape, frac=1.0, **kw):
        e = shape_set(*shape, measured=True)
        e["train.max_steps"] = int(e["train.max_steps"] * frac / 10) * 10
        e.update({"train.eval_every": e["train.max_steps"] // 5, "optim.warmup_steps": max(10, e["train.max_steps"] // 25)})
        e.update({k.replace("__", "."): v for k, v in kw.items()})
        return e
    shapes2 = [entry(sh) for sh in [(4, 128, 4), (4, 96, 3), (6, 96, 3), (8, 96, 3), (4, 64, 2), (6, 64, 2)]]
    shapes2 += [entry((4, 128, 4), 0.8), entry((6, 96, 3), 0.8), entry((4, 96, 3), 0.8)]
    write("tiny-5min-combo-shape",
          "Round 2 (not run yet): model.pos rope and optim.beta2 0.99 on the first round's base shape and its "
          "best shapes, steps from the measured CPU costs, also at 0.8x the budget.",
          {"set": dict(COMMON, **combo), "list": shapes2})
    recipe2 = [entry((6, 96, 3)), entry((6, 96, 3), optim__lr=0.02), entry((6, 96, 3), optim__muon_lr=0.03),
               entry((6, 96, 3), model__qk_norm=True), entry((6, 96, 3), optim__beta1=0.8),
               entry((6, 96, 3), optim__warmup_steps=0), entry((6, 96, 3), optim__beta2_=0),
               entry((6, 96, 3), optim__schedule="linear", optim__min_lr_ratio=0.0, optim__warmdown_steps=280),
               entry((4, 128, 4), optim__lr=0.02)]
    for e in recipe2:
        e.pop("optim.beta2_", None)
    recipe2[6]["optim.beta2"] = 0.999
    write("tiny-5min-combo-recipe",
          "Round 2 (not run yet): optimizer settings around rope + beta2 0.99 at 6 layers of d_model 96 (same "
          "CPU budget).",
          {"set": dict(COMMON, **{"model.pos": "rope"}), "list": [dict(e, **({} if "optim.beta2" in e else {"optim.beta2": 0.99})) for e in recipe2]})
    write("tiny-5min-arch",
          "Model options of configs/tiny.json (positions, activation, norms, bias, tying, init) at the "
          "fixed CPU budget of tiny-5min-shape.",
          {"set": base, "list": arch})
