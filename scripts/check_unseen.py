#!/usr/bin/env python3
"""Checks `idefics3 forward` against transformers on random checkpoints it has never seen.

Same pinned environment as make_fixtures.py (torch==2.15.0, transformers==5.24.0). Run from the repository
root after `cargo build --release`:
    python scripts/check_unseen.py [--cases 12] [--seed 0] [--bin target/release/idefics3]

Each case draws a configuration (widths, head counts and head dims including odd ones, GQA ratios, rope
type, tied or untied lm_head, scale factor, tile count, a partial tile, padding slots), a file layout
(single file or sharded, transformers-4 or -5 config keys) and a weight dtype (bf16, f16, f32), then
compares f32 logits and greedy tokens, and bf16 logits. Prints one line per case and exits non-zero on a
failure.
"""

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import greedy, pixel_tiles, reinit, to_transformers4_config  # noqa: E402
from transformers import Idefics3Config, Idefics3ForConditionalGeneration  # noqa: E402


def draw(rng: random.Random):
    patch = rng.choice([4, 5, 7, 8])
    scale = rng.choice([1, 2, 3])
    n = scale * rng.choice([2, 3, 4])
    vheads = rng.choice([1, 2, 3, 4])
    vhd = rng.choice([6, 8, 10, 18])
    heads = rng.choice([2, 3, 4, 6])
    kv = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
    hd = rng.choice([8, 12, 16, 20, 24])
    # transformers requires the width to be a multiple of the head count even with an explicit head_dim.
    hidden = heads * rng.choice([hd, 8, 12])
    vocab = rng.randint(60, 300)
    rope = rng.choice([
        dict(rope_type="default", rope_theta=rng.choice([10000.0, 100000.0, 500000.0])),
        dict(rope_type="linear", rope_theta=10000.0, factor=rng.choice([2.0, 4.0])),
        dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
             original_max_position_embeddings=rng.choice([32, 64, 256])),
    ])
    tied = rng.random() < 0.3
    return dict(
        vision_config=dict(hidden_size=vheads * vhd, intermediate_size=rng.randint(16, 100),
                           num_hidden_layers=rng.randint(1, 3), num_attention_heads=vheads,
                           image_size=n * patch, patch_size=patch),
        text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=rng.randint(20, 200),
                         num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads, num_key_value_heads=kv,
                         head_dim=hd, vocab_size=vocab, rms_norm_eps=rng.choice([1e-5, 1e-6]),
                         max_position_embeddings=4096, rope_parameters=rope, tie_word_embeddings=tied),
        scale_factor=scale, image_token_id=vocab - 1, tie_word_embeddings=tied,
    )


def inputs_for(rng: random.Random, g, config):
    v = config.vision_config
    n_tiles = rng.randint(1, 4)
    partial = None
    if rng.random() < 0.5:
        partial = (rng.randrange(n_tiles), rng.randint(v.patch_size, v.image_size), rng.randint(v.patch_size, v.image_size))
    tiles, mask = pixel_tiles(g, n_tiles, v.image_size, partial)
    pad = rng.randint(0, 2)
    if pad:
        tiles = torch.cat([tiles, torch.zeros(pad, *tiles.shape[1:])])
        mask = torch.cat([mask, torch.zeros(pad, *mask.shape[1:], dtype=torch.int64)])
    q = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2
    img = config.image_token_id
    ids = torch.randint(0, img - 1, (rng.randint(1, 6),), generator=g).tolist()
    for _ in range(n_tiles):
        ids += [img] * q + torch.randint(0, img - 1, (rng.randint(0, 3),), generator=g).tolist()
    return {
        "input_ids": torch.tensor([ids], dtype=torch.int64),
        "pixel_values": tiles.unsqueeze(0),
        "pixel_attention_mask": mask.unsqueeze(0),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bin", default="target/release/idefics3")
    args = ap.parse_args()
    torch.set_num_threads(2)
    failures = 0
    for c in range(args.cases):
        rng = random.Random(args.seed * 1000 + c)
        cfg = draw(rng)
        dtype = rng.choice([torch.bfloat16, torch.float16, torch.float32])
        sharded = rng.random() < 0.5
        v4 = rng.random() < 0.5
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            config = Idefics3Config(**cfg)
            model = Idefics3ForConditionalGeneration(config).eval()
            reinit(model, c)
            model.to(dtype).save_pretrained(tmp / "m", max_shard_size="100KB" if sharded else "50GB")
            if v4:
                to_transformers4_config(tmp / "m" / "config.json")
            g = torch.Generator().manual_seed(c)
            inputs = inputs_for(rng, g, config)
            save_file(inputs, str(tmp / "in.safetensors"))
            line = [f"case {c}: {str(dtype)[6:]} {'sharded' if sharded else 'single'} {'v4' if v4 else 'v5'} keys,"
                    f" L={inputs['input_ids'].shape[1]} T={inputs['pixel_values'].shape[1]}"]
            ok = True
            for mode, tdtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
                ref = Idefics3ForConditionalGeneration.from_pretrained(tmp / "m", dtype=tdtype).eval()
                logits, _, ids, _ = greedy(ref, dict(inputs), 8)
                out = tmp / f"out_{mode}.safetensors"
                r = subprocess.run([args.bin, "forward", "--model", str(tmp / "m"), "--inputs",
                                    str(tmp / "in.safetensors"), "--out", str(out), "--dtype", mode,
                                    "--greedy", "8"], capture_output=True, text=True)
                if r.returncode != 0:
                    line.append(f"{mode}: FAILED {r.stderr.strip()}")
                    ok = False
                    continue
                got = load_file(str(out))
                err = float((got["logits"] - logits).abs().max() / logits.abs().max())
                same = got["generated_ids"].tolist() == ids
                line.append(f"{mode} err {err:.2e} tokens {'equal' if same else 'DIFFER'}")
                if mode == "f32" and (err > 1e-4 or not same):
                    ok = False
                if mode == "bf16" and err > 0.03:
                    ok = False
            failures += not ok
            print(" ".join(line) + ("" if ok else "  <-- FAIL"), flush=True)
    print(f"{args.cases - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
