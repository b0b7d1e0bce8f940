#!/usr/bin/env python3
"""Builds W1, the CPU benchmark's work: a SmolVLM-256M-shaped Idefics3 checkpoint with random bf16 weights
(vision 768 wide, 12 layers, 12 heads, 512-px tiles, 16-px patches, scale 4; text 576 wide, 30 layers,
9 heads, 3 KV heads, 1536 MLP, vocabulary 49280, untied lm_head; about 513 MB), made with transformers,
and one 1536×1024 photo (13 tiles, 832 image tokens).

The tokenizer, chat template and processor settings come from the SmolLM2 conversion
(scripts/build_smollm2.sh), whose vocabulary and added tokens are SmolVLM-256M's; the template is
SmolVLM's (`<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:`).

Environment (as scripts/make_fixtures.py): pip install torch==2.15.0 transformers==5.24.0 pillow
    bash scripts/build_smollm2.sh && python bench/make_w1.py [--out target/w1]
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="target/w1")
    ap.add_argument("--tokenizer-from", default="target/smollm2-idefics3")
    args = ap.parse_args()
    src = Path(args.tokenizer_from)
    if not (src / "tokenizer.json").is_file():
        raise SystemExit(f"{src} has no tokenizer.json: run scripts/build_smollm2.sh first")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    tok = json.loads((src / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    config = Idefics3Config(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16, layer_norm_eps=1e-6),
        text_config=dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49280,
                         rms_norm_eps=1e-5, max_position_embeddings=8192,
                         rope_parameters=dict(rope_type="default", rope_theta=100000.0),
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False),
        scale_factor=4, image_token_id=ids["<image>"], tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        shutil.copy(src / f, out / f)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": TEMPLATE}) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": [2, ids["<end_of_utterance>"]]}) + "\n")
    photo = Image.open("examples/coffee.jpg").convert("RGB").resize((1536, 1024), Image.LANCZOS)
    photo.save(out / "photo.jpg", quality=92)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    print(f"wrote {out}: {size / 1e6:.0f} MB of weights, photo {out / 'photo.jpg'}")


if __name__ == "__main__":
    main()
