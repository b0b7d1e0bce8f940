#!/usr/bin/env python3
"""Runs transformers and `idefics3 bench` on the same work (W1 from bench/make_w1.py: one photo, one user
turn, exactly N greedy new tokens, T threads) and prints both side by side with the ratios.

    python bench/compare.py [--model target/w1] [--new-tokens 128] [--threads 2] [--dtypes bf16,f32] [--runs 3]

transformers: Idefics3Processor on the PIL path and Idefics3ForConditionalGeneration.generate with
min_new_tokens = max_new_tokens = N (so end-of-sequence cannot stop it); time to first token and decode
rate from the times at which a streamer receives each token; peak RSS from getrusage. Each side runs in
its own process, one after the other, so they never share the cores.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def run_transformers(model_dir, image, prompt, n, threads, dtype, runs):
    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor
    from transformers.image_utils import load_image

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    proc = Idefics3Processor.from_pretrained(model_dir)
    proc.image_processor = Idefics3ImageProcessorPil.from_pretrained(model_dir)
    model = Idefics3ForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
    load_s = time.perf_counter() - t0

    class Clock:
        def __init__(self):
            self.times = []
            self.first = True

        def put(self, value):
            if self.first:  # the prompt
                self.first = False
                return
            self.times.append(time.perf_counter())

        def end(self):
            pass

    res = []
    for r in range(runs + 1):
        t = time.perf_counter()
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        inputs = proc(text=text, images=[load_image(image)], return_tensors="pt")
        pre_s = time.perf_counter() - t
        clock = Clock()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock)
        if r == 0:
            continue  # warm-up
        ttft = clock.times[0] - start
        decode = (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
        res.append(dict(preprocess_s=pre_s, ttft_s=ttft, decode_tok_s=decode,
                        prompt_tokens=int(inputs["input_ids"].shape[1]), new_tokens=len(clock.times)))
    out = {k: statistics.median(x[k] for x in res) for k in ("preprocess_s", "ttft_s", "decode_tok_s")}
    out.update(prompt_tokens=res[0]["prompt_tokens"], new_tokens=res[0]["new_tokens"], load_s=load_s,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               prefill_tok_s=res[0]["prompt_tokens"] / out["ttft_s"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="target/w1")
    ap.add_argument("--image", default=None)
    ap.add_argument("--prompt", default="Describe this image in detail.")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtypes", default="bf16,f32")
    ap.add_argument("--bin", default="target/release/idefics3")
    ap.add_argument("--hf-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    image = args.image or os.path.join(args.model, "photo.jpg")
    if args.hf_only:
        print(json.dumps(run_transformers(args.model, image, args.prompt, args.new_tokens, args.threads,
                                          args.dtypes, args.runs)))
        return
    rows = []
    for dtype in args.dtypes.split(","):
        hf = json.loads(subprocess.run(
            [sys.executable, __file__, "--hf-only", "--model", args.model, "--image", image, "--prompt", args.prompt,
             "--new-tokens", str(args.new_tokens), "--threads", str(args.threads), "--runs", str(args.runs),
             "--dtypes", dtype], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        ours = json.loads(subprocess.run(
            [args.bin, "bench", "--model", args.model, "--image", image, "--prompt", args.prompt, "--new-tokens",
             str(args.new_tokens), "--threads", str(args.threads), "--runs", str(args.runs), "--warmup", "1",
             "--dtype", dtype, "--json"], check=True, capture_output=True, text=True).stdout)
        rows.append((dtype, hf, ours))
    print(f"W1: {args.model}, {image}, {args.new_tokens} new tokens, {args.threads} threads, "
          f"medians of {args.runs} runs after one warm-up\n")
    print("| precision | engine | prompt tokens | TTFT s | prefill tok/s | decode tok/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for dtype, hf, ours in rows:
        for name, r in (("transformers", hf), ("idefics3", ours)):
            print(f"| {dtype} | {name} | {r['prompt_tokens']} | {r['ttft_s']:.2f} | {r['prefill_tok_s']:.0f} | "
                  f"{r['decode_tok_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    print("\n| precision | TTFT ratio (transformers / idefics3) | decode ratio (idefics3 / transformers) |")
    print("|---|---|---|")
    for dtype, hf, ours in rows:
        print(f"| {dtype} | {hf['ttft_s'] / ours['ttft_s']:.2f}× | {ours['decode_tok_s'] / hf['decode_tok_s']:.2f}× |")
    for dtype, hf, ours in rows:
        if dtype == "bf16":
            print(f"\nidefics3 bf16 stages: vision {ours['vision_s']:.2f} s ({ours['vision_s_per_tile']:.3f} s/tile), "
                  f"preprocessing {ours['preprocess_s']:.2f} s, load {ours['load_s']:.2f} s")


if __name__ == "__main__":
    main()
