#!/usr/bin/env python3
"""Builds the tiny Idefics3 checkpoints, inputs and expected outputs under tests/fixtures/.

Pinned reference (install into a virtual environment, CPU is enough):
    pip install torch==2.15.0 transformers==5.24.0 safetensors numpy

Run from the repository root:
    python scripts/make_fixtures.py [--out tests/fixtures]

Each case directory holds
    model/                     a checkpoint as transformers saves it (config.json + safetensors)
    inputs.safetensors         input_ids [1, L] i64, pixel_values [1, T, 3, S, S] f32, pixel_attention_mask
    expected_f32.safetensors   logits [L, V], image_features [T*q, H], generated_ids [N], step_logits [N, V]
    expected_bf16.safetensors  the same, computed by transformers in bfloat16

Random weights are drawn at unit scale (1/sqrt(fan_in) for matrices, norms around 1) so that every part of
the network moves the logits: with transformers' 0.02 init most errors would vanish in the noise.
The reference runs the model directly (prefill, then one token per step with the KV cache), taking the
argmax of the last logits, so that N tokens are produced whatever the end-of-sequence id.
"""

import argparse
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

GREEDY_TOKENS = 20


def reinit(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name):
                if name.endswith("bias"):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "position_embedding" in name:
                # A tied lm_head scores the current token's own row highest unless the rows are small
                # beside what the layers add: greedy output would repeat one token.
                scale = 0.3 if model.config.tie_word_embeddings else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def to_transformers4_config(path: Path) -> None:
    """Rewrites config.json with the keys published checkpoints use (transformers 4.x)."""
    cfg = json.loads(path.read_text())
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    t = cfg["text_config"]
    rp = t.pop("rope_parameters")
    t["rope_theta"] = rp.pop("rope_theta")
    t["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    t.pop("dtype", None)
    cfg["vision_config"].pop("dtype", None)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def pixel_tiles(g, n_tiles, size, partial=None):
    """Tiles as the processor makes them: values (u/255 - 0.5)/0.5 for uint8 u, f32."""
    u = torch.randint(0, 256, (n_tiles, 3, size, size), generator=g).to(torch.float64)
    tiles = ((u * (1 / 255)).to(torch.float32) - 0.5) / 0.5
    mask = torch.ones(n_tiles, size, size, dtype=torch.int64)
    if partial is not None:
        # One tile holds a smaller image at its top-left corner, the rest is padding.
        t, h, w = partial
        mask[t] = 0
        mask[t, :h, :w] = 1
        tiles[t] *= mask[t].to(torch.float32)
    return tiles, mask


@torch.no_grad()
def greedy(model, inputs, n_new):
    out = model(**inputs, use_cache=True)
    logits = out.logits[0].float()
    img = out.image_hidden_states if "pixel_values" in inputs else None
    if isinstance(img, (list, tuple)):
        img = torch.cat([f.reshape(-1, f.shape[-1]) for f in img]) if img else None
    feats = img.reshape(-1, img.shape[-1]).float() if img is not None else None
    step_logits = [logits[-1]]
    ids = []
    past = out.past_key_values
    for k in range(n_new):
        nxt = int(step_logits[-1].argmax())
        ids.append(nxt)
        if k + 1 == n_new:
            break
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        step_logits.append(out.logits[0, -1].float())
    return logits, feats, ids, torch.stack(step_logits)


def margins(step_logits):
    top2 = step_logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) / step_logits.abs().max()


def make_case(out_dir: Path, name: str, cfg_kwargs: dict, save: dict, inputs_fn, seed: int):
    case = out_dir / name
    if case.exists():
        shutil.rmtree(case)
    model_dir = case / "model"
    config = Idefics3Config(**cfg_kwargs)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    reinit(model, seed)
    model.to(save["dtype"]).save_pretrained(model_dir, max_shard_size=save.get("max_shard_size", "50GB"))
    if save.get("transformers4_config"):
        to_transformers4_config(model_dir / "config.json")
    for extra in model_dir.glob("generation_config.json"):
        extra.unlink()

    g = torch.Generator().manual_seed(seed + 1)
    inputs = inputs_fn(g, config)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(case / "inputs.safetensors"))

    report = {}
    for mode, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        ref = Idefics3ForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
        logits, feats, ids, steps = greedy(ref, dict(inputs), GREEDY_TOKENS)
        tensors = {
            "logits": logits.contiguous(),
            "generated_ids": torch.tensor(ids, dtype=torch.int64),
            "step_logits": steps.contiguous(),
        }
        if feats is not None:
            tensors["image_features"] = feats.contiguous()
        save_file(tensors, str(case / f"expected_{mode}.safetensors"))
        m = margins(steps)
        report[mode] = {"min_relative_top2_margin": float(m.min()), "tokens": ids}
    print(name, json.dumps(report))
    return report


def idefics3_like_inputs(g, config):
    v = config.vision_config
    tiles, mask = pixel_tiles(g, 3, v.image_size, partial=(1, 40, 33))
    # A padding slot, as the processor adds when another sample of a batch has more tiles.
    tiles = torch.cat([tiles, torch.zeros(1, *tiles.shape[1:])])
    mask = torch.cat([mask, torch.zeros(1, *mask.shape[1:], dtype=torch.int64)])
    q = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2
    img, fake = config.image_token_id, config.image_token_id - 1
    text = lambda n: torch.randint(3, img - 1, (n,), generator=g).tolist()
    ids = [1] + text(5) + [fake] + [img] * q + [fake] + text(2) + [fake] + [img] * q
    ids += [fake] + [img] * q + [fake] + text(4)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.int64),
        "pixel_values": tiles.unsqueeze(0),
        "pixel_attention_mask": mask.unsqueeze(0),
    }


def smolvlm_like_inputs(g, config):
    v = config.vision_config
    tiles, mask = pixel_tiles(g, 3, v.image_size)
    q = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2
    img, fake = config.image_token_id, config.image_token_id - 1
    text = lambda n: torch.randint(3, img - 1, (n,), generator=g).tolist()
    ids = text(3)
    for _ in range(3):
        ids += [fake] + [img] * q
    ids += [fake] + text(6)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.int64),
        "pixel_values": tiles.unsqueeze(0),
        "pixel_attention_mask": mask.bool().unsqueeze(0),
    }


def text_only_inputs(g, config):
    ids = torch.randint(3, config.image_token_id - 1, (1, 23), generator=g)
    return {"input_ids": ids}


IDEFICS3_LIKE = dict(
    vision_config=dict(
        hidden_size=72, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4,
        image_size=56, patch_size=7, layer_norm_eps=1e-6,
    ),
    text_config=dict(
        model_type="llama", hidden_size=96, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, vocab_size=320, rms_norm_eps=1e-5,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64),
    ),
    scale_factor=2, image_token_id=318, tie_word_embeddings=False,
)

SMOLVLM_LIKE = dict(
    vision_config=dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        image_size=128, patch_size=16, layer_norm_eps=1e-6,
    ),
    text_config=dict(
        model_type="llama", hidden_size=96, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, vocab_size=280, rms_norm_eps=1e-5,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        rope_parameters=dict(rope_type="default", rope_theta=100000.0),
    ),
    scale_factor=4, image_token_id=270, tie_word_embeddings=False,
)

# Tied lm_head, float16 weights, text only, linear rope scaling, head_dim derived from the width.
TIED_TEXT = dict(
    vision_config=dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8,
    ),
    text_config=dict(
        model_type="llama", hidden_size=80, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=1, vocab_size=200, rms_norm_eps=1e-6,
        max_position_embeddings=512, rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
        tie_word_embeddings=True,
    ),
    scale_factor=2, image_token_id=199, tie_word_embeddings=True,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    make_case(out, "idefics3_like", IDEFICS3_LIKE,
              dict(dtype=torch.bfloat16, max_shard_size="300KB", transformers4_config=True),
              idefics3_like_inputs, seed=11)
    make_case(out, "smolvlm_like", SMOLVLM_LIKE, dict(dtype=torch.float32), smolvlm_like_inputs, seed=23)
    make_case(out, "tied_text", TIED_TEXT, dict(dtype=torch.float16), text_only_inputs, seed=37)


if __name__ == "__main__":
    main()
