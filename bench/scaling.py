#!/usr/bin/env python3
"""How the cost of `idefics3 bench` grows on W1 (bench/make_w1.py): prefill against the number of tiles,
decode speed against the context length, and the gain from the second core.

    python bench/scaling.py [--model target/w1] [--bin target/release/idefics3] [--runs 2]

- Tiles: the W1 photo cropped to aspect ratios 4:1, 2:1, 3:2 and 1:1. The processor scales every image to
  a longest edge of 2048 and cuts 512-px tiles plus one global tile, so these give 5, 9, 13 and 17 tiles.
  Printed: vision seconds per tile and time to first token, with a straight-line fit of TTFT on tiles.
- Context: text-only prompts of about 100 and about 4000 tokens, 64 new tokens each. Printed: decode
  tok/s and the bytes one decode step reads (weights plus the bf16 KV cache), so the measured slowdown
  can be set against the one the extra bytes explain.
- Threads: the W1 request on 1 and on 2 threads: time to first token and decode tok/s.

Needs Pillow (the image crops) and a release build of the CLI (`cargo build --release`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def bench(binary, model, images, prompt, new_tokens, runs, threads):
    cmd = [binary, "bench", "--model", model, "--new-tokens", str(new_tokens), "--runs", str(runs),
           "--warmup", "1", "--threads", str(threads), "--json", "--prompt", prompt]
    for im in images:
        cmd += ["--image", im]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    icept = my - slope * mx
    resid = max(abs(y - (icept + slope * x)) / y for x, y in zip(xs, ys))
    return slope, icept, resid


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="target/w1")
    ap.add_argument("--bin", default="target/release/idefics3")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: tiles,context,threads")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    photo = os.path.join(a.model, "photo.jpg")
    for p in (a.bin, photo):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: build the CLI (cargo build --release) and W1 (python bench/make_w1.py)")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    tc = cfg["text_config"]
    layers, kv_w = tc["num_hidden_layers"], tc["num_key_value_heads"] * (
        tc.get("head_dim") or tc["hidden_size"] // tc["num_attention_heads"])
    # What one decode step streams: every decoder matrix and lm_head, in bf16 (2 bytes).
    h, inter, hd = tc["hidden_size"], tc["intermediate_size"], kv_w // tc["num_key_value_heads"]
    q_w = tc["num_attention_heads"] * hd
    per_layer = h * q_w * 2 + h * kv_w * 2 + 3 * h * inter
    weights_mb = (layers * per_layer + tc["vocab_size"] * h) * 2 / 1e6
    prompt = "Describe this image in detail."

    if "tiles" not in skip:
        from PIL import Image
        src = Image.open(photo).convert("RGB")
        w, h = src.size
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, ratio in (("4:1", 4.0), ("2:1", 2.0), ("3:2", 1.5), ("1:1", 1.0)):
                cw, ch = (w, round(w / ratio)) if w / ratio <= h else (round(h * ratio), h)
                path = os.path.join(tmp, f"crop{ratio}.png")
                src.crop((0, 0, cw, ch)).save(path)
                r = bench(a.bin, a.model, [path], prompt, 1, a.runs, 2)
                rows.append((name, r))
                print(f"  {name}: {r['tiles']} tiles, {r['prompt_tokens']} prompt tokens, "
                      f"vision {r['vision_s_per_tile']:.3f} s/tile, TTFT {r['ttft_s']:.2f} s", flush=True)
        tiles = [r["tiles"] for _, r in rows]
        ttft = [r["ttft_s"] for _, r in rows]
        per_tile = [r["vision_s_per_tile"] for _, r in rows]
        slope, icept, resid = fit(tiles, ttft)
        print("\n## Prefill against tiles (2 threads)\n")
        print("| aspect | tiles | prompt tokens | vision s/tile | TTFT s |")
        print("|---|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['tiles']} | {r['prompt_tokens']} | {r['vision_s_per_tile']:.3f} | {r['ttft_s']:.2f} |")
        print(f"\nTTFT ≈ {icept:.2f} s + {slope:.3f} s × tiles; largest deviation from the line "
              f"{100 * resid:.1f}%; vision s/tile from {min(per_tile):.3f} to {max(per_tile):.3f} "
              f"(spread {100 * (max(per_tile) / min(per_tile) - 1):.1f}%)\n", flush=True)

    if "context" not in skip:
        rows = []
        for target in (100, 4000):
            # Plain words: each is one token in this tokenizer family; the template adds a few.
            text = " ".join(["the quick brown fox jumps over the lazy dog"] * (target // 9))
            r = bench(a.bin, a.model, [], text, 64, a.runs, 2)
            ctx = r["prompt_tokens"] + r["new_tokens"] / 2
            kv_mb = layers * ctx * kv_w * 2 * 2 / 1e6
            rows.append((r, kv_mb))
        print("## Decode against context (2 threads, 64 new tokens)\n")
        print("| prompt tokens | decode tok/s | MB read per token (decoder weights + bf16 KV) |")
        print("|---|---|---|")
        for r, kv in rows:
            print(f"| {r['prompt_tokens']} | {r['decode_tok_s']:.1f} | {weights_mb:.0f} + {kv:.0f} |")
        (r0, kv0), (r1, kv1) = rows
        print(f"\nlong/short decode speed: {r1['decode_tok_s'] / r0['decode_tok_s']:.2f}; the bytes read predict "
              f"{(weights_mb + kv0) / (weights_mb + kv1):.2f} for a purely bandwidth-bound decoder; "
              f"effective read bandwidth {(weights_mb + kv0) * r0['decode_tok_s'] / 1e3:.1f} and "
              f"{(weights_mb + kv1) * r1['decode_tok_s'] / 1e3:.1f} GB/s\n", flush=True)

    if "threads" not in skip:
        one = bench(a.bin, a.model, [photo], prompt, 32, a.runs, 1)
        two = bench(a.bin, a.model, [photo], prompt, 32, a.runs, 2)
        print("## Threads (W1 request, 32 new tokens)\n")
        print("| threads | TTFT s | prefill tok/s | vision s/tile | decode tok/s |")
        print("|---|---|---|---|---|")
        for t, r in ((1, one), (2, two)):
            print(f"| {t} | {r['ttft_s']:.2f} | {r['prefill_tok_s']:.1f} | {r['vision_s_per_tile']:.3f} | "
                  f"{r['decode_tok_s']:.1f} |")
        print(f"\nsecond core: prefill {one['ttft_s'] / two['ttft_s']:.2f}×, "
              f"decode {two['decode_tok_s'] / one['decode_tok_s']:.2f}×")


if __name__ == "__main__":
    main()
