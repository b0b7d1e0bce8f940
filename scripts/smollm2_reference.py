#!/usr/bin/env python3
"""Greedy output of transformers on the checkpoint made by make_smollm2_checkpoint.py, for the real-weights
test (tests/real_weights.rs). Same environment as make_fixtures.py plus the converter's packages:
    python scripts/smollm2_reference.py --model target/smollm2-idefics3 > tests/fixtures/real_weights.json
"""

import argparse
import json

import torch
from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor
from transformers.image_utils import load_image

CASES = [
    dict(name="capital", prompt="What is the capital of France?", images=[]),
    dict(name="photo", prompt="What is in this image?", images=["examples/chelsea.png"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="target/smollm2-idefics3")
    ap.add_argument("--max-new-tokens", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    proc = Idefics3Processor.from_pretrained(args.model, image_processor_class=Idefics3ImageProcessorPil)
    proc.image_processor = Idefics3ImageProcessorPil.from_pretrained(args.model)
    model = Idefics3ForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    out = {"max_new_tokens": args.max_new_tokens, "dtype": "f32", "cases": []}
    for c in CASES:
        msgs = [{"role": "user", "content": [{"type": "image"}] * len(c["images"]) + [{"type": "text", "text": c["prompt"]}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        images = [load_image(p) for p in c["images"]] or None
        inputs = proc(text=text, images=images, return_tensors="pt")
        with torch.no_grad():
            g = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                               eos_token_id=model.generation_config.eos_token_id)
        new = g[0, inputs["input_ids"].shape[1]:].tolist()
        out["cases"].append(dict(c, prompt_ids=inputs["input_ids"][0].tolist(), generated_ids=new,
                                 text=proc.decode(new, skip_special_tokens=True)))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
