#!/usr/bin/env python3
"""Checks a `polargpt export --format hf` directory with the real transformers library.

    python3 scripts/check_hf_export.py EXPORT_DIR [--polargpt build/polargpt] [--batches 4]
                                      [--expect-loss L] [--llmc FILE.bin] [--tol 1e-4]

1. Loads EXPORT_DIR offline with transformers' GPT2LMHeadModel in fp32 (eager attention, no TF32).
2. Reads the tokens polargpt's `eval` reads: the val shards of the source checkpoint's config
   (EXPORT_DIR/polargpt.json; llm.c shard format), windows of seq_len + 1 tokens at stride seq_len,
   the first batches * batch_size of them in order.
3. Computes the mean cross-entropy and argmax accuracy over those tokens and compares them with
   `polargpt eval --ckpt <source> --batches N` (run here), or with --expect-loss.
4. With --llmc FILE.bin (the llm.c file the checkpoint was imported from): reads that file by
   llm.c's layout, independently of polargpt, and checks that every tensor transformers loaded
   equals it (c_attn = qkvw^T and the other Conv1D weights transposed, wte without padding rows).

Relative paths in the source config (data.val) are taken from the current directory, so run it
from where polargpt trained. Exit status 0 when everything agrees within --tol, 1 otherwise.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import GPT2LMHeadModel


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=256)
    if header[0] != 20240520 or header[1] != 1:
        sys.exit(f"{path}: not an llm.c token shard (magic {header[0]}, version {header[1]})")
    tokens = np.fromfile(path, dtype="<u2", offset=1024)
    if len(tokens) != header[2]:
        sys.exit(f"{path}: header says {header[2]} tokens, file holds {len(tokens)}")
    return tokens


def eval_windows(cfg, batches):
    """The inputs/targets of polargpt's sequential val loader for `batches` batches: [n, T+1]."""
    files = sorted(glob.glob(cfg["data"]["val"]))
    if not files:
        sys.exit(f"data.val {cfg['data']['val']!r} matches no file (run from polargpt's working directory)")
    stream = np.concatenate([read_shard(f) for f in files]).astype(np.int64)
    T, B = cfg["model"]["seq_len"], cfg["train"]["batch_size"]
    n_windows = (len(stream) - 1) // T
    n_batches = n_windows // B if batches == 0 else min(batches, n_windows // B)
    if n_batches == 0:
        sys.exit("the val split holds fewer than batch_size windows")
    idx = np.arange(n_batches * B)[:, None] * T + np.arange(T + 1)[None, :]
    return stream[idx], B, n_batches


def polargpt_eval(binary, ckpt, batches):
    out = subprocess.run([binary, "eval", "--ckpt", ckpt, "--batches", str(batches)], check=True,
                         capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def read_llmc(path):
    """An llm.c GPT-2 model file as named numpy arrays, following llm.c's own layout."""
    header = np.fromfile(path, dtype="<i4", count=256)
    magic, version, maxT, V, L, NH, C, Vp = (int(x) for x in header[:8])
    assert magic == 20240326 and version in (3, 5), (magic, version)
    raw = np.fromfile(path, dtype="<f4" if version == 3 else "<u2", offset=1024)
    if version == 5:  # bf16: the top half of an fp32
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    shapes = [("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
              ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)),
              ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
              ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)), ("lnfw", (C,)), ("lnfb", (C,))]
    t, pos = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        t[name] = raw[pos:pos + n].reshape(shape)
        pos += n
    assert pos == len(raw), f"{path}: {len(raw) - pos} values left after the last tensor"
    return t, V, L


def compare_with_llmc(model, path):
    t, V, L = read_llmc(path)
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    want = {"transformer.wte.weight": t["wte"][:V], "transformer.wpe.weight": t["wpe"],
            "transformer.ln_f.weight": t["lnfw"], "transformer.ln_f.bias": t["lnfb"]}
    for l in range(L):
        h = f"transformer.h.{l}."
        want.update({
            h + "ln_1.weight": t["ln1w"][l], h + "ln_1.bias": t["ln1b"][l],
            h + "attn.c_attn.weight": t["qkvw"][l].T, h + "attn.c_attn.bias": t["qkvb"][l],
            h + "attn.c_proj.weight": t["attprojw"][l].T, h + "attn.c_proj.bias": t["attprojb"][l],
            h + "ln_2.weight": t["ln2w"][l], h + "ln_2.bias": t["ln2b"][l],
            h + "mlp.c_fc.weight": t["fcw"][l].T, h + "mlp.c_fc.bias": t["fcb"][l],
            h + "mlp.c_proj.weight": t["fcprojw"][l].T, h + "mlp.c_proj.bias": t["fcprojb"][l],
        })
    bad = [k for k, v in want.items() if sd[k].shape != v.shape or not np.array_equal(sd[k], v)]
    tied = np.array_equal(sd["lm_head.weight"], sd["transformer.wte.weight"])
    print(f"llm.c file {path}: {len(want) - len(bad)}/{len(want)} tensors identical to the loaded model; "
          f"lm_head tied to wte: {tied}")
    for k in bad[:10]:
        print(f"  MISMATCH {k}: loaded {sd[k].shape}, llm.c {want[k].shape}")
    return not bad and tied


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--polargpt", default="build/polargpt", help="the polargpt binary that runs `eval`")
    ap.add_argument("--batches", type=int, default=4, help="val batches (0 = the whole split)")
    ap.add_argument("--expect-loss", type=float, help="compare with this loss instead of running polargpt eval")
    ap.add_argument("--llmc", help="the llm.c file the checkpoint was imported from: compare every tensor")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted |loss difference|")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(os.path.join(args.export_dir, "polargpt.json")) as f:
        src = json.load(f)
    cfg = src["config"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT2LMHeadModel.from_pretrained(args.export_dir, local_files_only=True, torch_dtype=torch.float32,
                                            attn_implementation="eager").to(device).eval()
    print(f"transformers loaded {args.export_dir}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{model.config.n_layer} layers, n_embd {model.config.n_embd}, vocab {model.config.vocab_size} ({device})")

    windows, B, n_batches = eval_windows(cfg, args.batches)
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for b in range(n_batches):
            w = torch.from_numpy(windows[b * B:(b + 1) * B]).to(device)
            logits = model(w[:, :-1]).logits.float()
            y = w[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss_sum += loss.item()  # polargpt averages the per-batch means, as here
            correct += (logits.argmax(-1) == y).sum().item()
            count += y.numel()
    hf_loss, hf_acc = loss_sum / n_batches, correct / count

    if args.expect_loss is not None:
        pg_loss, pg_acc = args.expect_loss, None
    else:
        e = polargpt_eval(args.polargpt, src["ckpt"], n_batches)
        pg_loss, pg_acc = e["val_loss"], e["val_acc"]
        assert e["tokens"] == count, (e["tokens"], count)
    diff = abs(hf_loss - pg_loss)
    print(f"tokens {count}: transformers loss {hf_loss:.6f} acc {hf_acc:.6f} | polargpt loss {pg_loss:.6f}"
          + (f" acc {pg_acc:.6f}" if pg_acc is not None else "") + f" | |diff| {diff:.2e} (tol {args.tol:g})")
    ok = diff <= args.tol
    if pg_acc is not None and abs(hf_acc - pg_acc) > 4.0 / count:  # a few argmax near-ties may flip
        print(f"accuracy differs by {abs(hf_acc - pg_acc):.2e}")
        ok = False
    if args.llmc:
        ok = compare_with_llmc(model, args.llmc) and ok
    print("check_hf_export: OK" if ok else "check_hf_export: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
