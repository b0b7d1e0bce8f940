#!/usr/bin/env python3
"""Writes an Idefics3-8B-Llama3-shaped checkpoint with random bf16 weights and few layers, for counting the
device work per decoded token on the simulator (`idefics3 bench --backend ascend`): Idefics3-8B's widths and
head counts (text 4096 wide, 32 heads over 8 KV heads of 128, MLP 14336, vocabulary 128256, llama3 rope;
vision SigLIP-so400m 1152 wide, 16 heads of 72, MLP 4304, 364-px tiles, 14-px patches; scale factor 2), with
--text-layers and --vision-layers layers (1 each by default). Pure Python (no numpy or torch): the random
values are one block of bf16 numbers in [-0.03, 0.03] repeated, norms are 1. The tokenizer, chat template
and processor files come from tests/fixtures/processor/llama3_style (a small vocabulary whose ids all lie
below 128256). Not a model: its answers are noise; only the shapes and therefore the work are Idefics3-8B's.

    python3 bench/make_shaped.py --out target/shaped-8b-l1 --text-layers 1
    python3 bench/make_shaped.py --shape w1 --out target/shaped-w1 --text-layers 30 --vision-layers 12
"""

import argparse
import json
import random
import shutil
import struct
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/processor/llama3_style"
SHAPES = {
    # Idefics3-8B-Llama3.
    "8b": (dict(hidden=4096, inter=14336, heads=32, kv=8, head_dim=128, vocab=128256),
           dict(hidden=1152, inter=4304, heads=16, patch=14, image=364), 2),
    # W1's checkpoint (bench/make_w1.py: SmolVLM-256M's shapes).
    "w1": (dict(hidden=576, inter=1536, heads=9, kv=3, head_dim=64, vocab=49280),
           dict(hidden=768, inter=3072, heads=12, patch=16, image=512), 4),
}
T, V, SCALE = SHAPES["8b"]


def bf16_block(n, rng):
    out = bytearray()
    for _ in range(n):
        bits = struct.unpack("<I", struct.pack("<f", rng.uniform(-0.03, 0.03)))[0]
        out += struct.pack("<H", bits >> 16)
    return bytes(out)


def tensors(text_layers, vision_layers):
    t, v = T, V
    yield "lm_head.weight", [t["vocab"], t["hidden"]], "rand"
    yield "model.text_model.embed_tokens.weight", [t["vocab"], t["hidden"]], "rand"
    yield "model.text_model.norm.weight", [t["hidden"]], "ones"
    kv = t["kv"] * t["head_dim"]
    for i in range(text_layers):
        p = f"model.text_model.layers.{i}."
        yield p + "input_layernorm.weight", [t["hidden"]], "ones"
        yield p + "post_attention_layernorm.weight", [t["hidden"]], "ones"
        yield p + "self_attn.q_proj.weight", [t["heads"] * t["head_dim"], t["hidden"]], "rand"
        yield p + "self_attn.k_proj.weight", [kv, t["hidden"]], "rand"
        yield p + "self_attn.v_proj.weight", [kv, t["hidden"]], "rand"
        yield p + "self_attn.o_proj.weight", [t["hidden"], t["heads"] * t["head_dim"]], "rand"
        yield p + "mlp.gate_proj.weight", [t["inter"], t["hidden"]], "rand"
        yield p + "mlp.up_proj.weight", [t["inter"], t["hidden"]], "rand"
        yield p + "mlp.down_proj.weight", [t["hidden"], t["inter"]], "rand"
    yield "model.connector.modality_projection.proj.weight", [t["hidden"], v["hidden"] * SCALE * SCALE], "rand"
    side = v["image"] // v["patch"]
    e = "model.vision_model.embeddings."
    yield e + "patch_embedding.weight", [v["hidden"], 3, v["patch"], v["patch"]], "rand"
    yield e + "patch_embedding.bias", [v["hidden"]], "rand"
    yield e + "position_embedding.weight", [side * side, v["hidden"]], "rand"
    yield "model.vision_model.post_layernorm.weight", [v["hidden"]], "ones"
    yield "model.vision_model.post_layernorm.bias", [v["hidden"]], "zeros"
    for i in range(vision_layers):
        p = f"model.vision_model.encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            yield p + n + ".weight", [v["hidden"]], "ones"
            yield p + n + ".bias", [v["hidden"]], "zeros"
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield p + f"self_attn.{n}.weight", [v["hidden"], v["hidden"]], "rand"
            yield p + f"self_attn.{n}.bias", [v["hidden"]], "rand"
        yield p + "mlp.fc1.weight", [v["inter"], v["hidden"]], "rand"
        yield p + "mlp.fc1.bias", [v["inter"]], "rand"
        yield p + "mlp.fc2.weight", [v["hidden"], v["inter"]], "rand"
        yield p + "mlp.fc2.bias", [v["hidden"]], "rand"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--text-layers", type=int, default=1)
    ap.add_argument("--vision-layers", type=int, default=1)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    args = ap.parse_args()
    global T, V, SCALE
    T, V, SCALE = SHAPES[args.shape]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json"):
        shutil.copy(FIXTURE / name, out / name)
    proc = json.loads((FIXTURE / "processor_config.json").read_text())
    proc["image_seq_len"] = (V["image"] // V["patch"]) ** 2 // (SCALE * SCALE)
    (out / "processor_config.json").write_text(json.dumps(proc, indent=2))
    cfg = json.loads((FIXTURE / "config.json").read_text())
    tc, vc = cfg["text_config"], cfg["vision_config"]
    tc.update(hidden_size=T["hidden"], intermediate_size=T["inter"], num_attention_heads=T["heads"],
              num_key_value_heads=T["kv"], head_dim=T["head_dim"], vocab_size=T["vocab"],
              num_hidden_layers=args.text_layers, max_position_embeddings=8192)
    tc["rope_parameters"]["original_max_position_embeddings"] = 8192
    if args.shape == "w1":
        tc["rope_parameters"] = {"rope_theta": 100000.0, "rope_type": "default"}
    vc.update(hidden_size=V["hidden"], intermediate_size=V["inter"], num_attention_heads=V["heads"],
              patch_size=V["patch"], image_size=V["image"], num_hidden_layers=args.vision_layers)
    cfg["scale_factor"] = SCALE
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    pre = json.loads((FIXTURE / "preprocessor_config.json").read_text())
    pre["max_image_size"] = {"longest_edge": V["image"]}
    pre["size"] = {"longest_edge": V["image"]}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))

    rng = random.Random(0)
    block = bf16_block(1 << 16, rng)
    specs = list(tensors(args.text_layers, args.vision_layers))
    header, offset = {}, 0
    for name, shape, _ in specs:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape, kind in specs:
            n = 2
            for d in shape:
                n *= d
            if kind == "ones":
                f.write(struct.pack("<H", 0x3F80) * (n // 2))
            elif kind == "zeros":
                f.write(bytes(n))
            else:
                reps, rest = divmod(n, len(block))
                for _ in range(reps):
                    f.write(block)
                f.write(block[:rest])
    print(f"{out}: {len(specs)} tensors, {offset / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
