#!/usr/bin/env python3
"""Builds the processor fixtures under tests/fixtures/processor/: two tiny Idefics3 checkpoints with
tokenizers and processor files, images of many kinds, and what transformers' Idefics3Processor (PIL path,
`load_image` then the processor) makes of them; plus end-to-end greedy generations.

Pinned reference (same environment as make_fixtures.py):
    pip install torch==2.15.0 transformers==5.24.0 safetensors numpy pillow==13.0.0 tokenizers scikit-image

Run from the repository root:
    python scripts/make_processor_fixtures.py

Checkpoints:
  llama3_style   Llama-3-like tokenizer: BOS added by the post-processor, the template also writes
                 <|begin_of_text|> (so two BOS), <global-img> and <row_i_col_j> are plain BPE text.
                 Published file layout: preprocessor_config.json + processor_config.json + chat_template.json.
                 Tiles of 32 px, longest edge 128, scale 2.
  smolvlm_style  SmolVLM-like tokenizer: no BOS, single added tokens for <global-img> and the row tags,
                 template starting with <|im_start|>. transformers 5 layout (everything in processor_config.json).
                 Tiles of 32 px (4-px patches), longest edge 96, scale 4.
The tokenizers are small byte-level BPEs trained here, so the fixtures stay small.

Outputs:
  <checkpoint>/                  the model directory
  images/                        the input images
  cases.json                     per case (one user turn + generation prompt): input_ids, and the shape and
                                 sha256 of pixel_values as little-endian f32 (bit-exact check, small fixture);
                                 pixel_attention_mask is all ones for one sample
  generate.json                  greedy ids of transformers' generate() for the generation cases
  realistic.json                 sha256 of pixel_values for the example photos at Idefics3 (1456/364) and
                                 SmolVLM (2048/512) settings, too large to store
"""

import hashlib
import io
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                          Idefics3Processor, PreTrainedTokenizerFast)
from transformers.image_utils import load_image

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import reinit  # noqa: E402

ROOT = Path("tests/fixtures/processor")
SKDATA = Path(skimage.__file__).parent / "data"

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_TEMPLATE = IDEFICS3_TEMPLATE.replace("<|begin_of_text|>", "<|im_start|>")

CORPUS = [
    "User: What do we see in this image? Assistant: In this image, we can see the city of New York, "
    "and more specifically the Statue of Liberty.",
    "And how about this image? Describe this image in detail. What is the capital of France? Paris.",
    "A cat sits on a wooden table next to a cup of coffee. The rocket stands on the launch pad.",
    "row col global img image fake token around utterance end of",
    "The quick brown fox jumps over the lazy dog. 0123456789 \n\n",
] * 4


def train_tokenizer(vocab_size, specials, single_tags, bos):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(specials)
    if single_tags:
        tok.add_tokens(["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
    tok.add_special_tokens(["<fake_token_around_image>", "<image>", "<end_of_utterance>"])
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


CHECKPOINTS = {
    "llama3_style": dict(
        tokenizer=dict(vocab_size=420, specials=["<|begin_of_text|>", "<|end_of_text|>"], single_tags=False,
                       bos="<|begin_of_text|>"),
        bos="<|begin_of_text|>", eos="<|end_of_text|>", template=IDEFICS3_TEMPLATE,
        vision=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8),
        text=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                  low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)),
        scale_factor=2, longest_edge=128, layout="v4",
    ),
    "smolvlm_style": dict(
        tokenizer=dict(vocab_size=400, specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], single_tags=True,
                       bos=None),
        bos="<|im_start|>", eos="<end_of_utterance>", template=SMOLVLM_TEMPLATE,
        vision=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=4),
        text=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
                  num_key_value_heads=1, rope_parameters=dict(rope_type="default", rope_theta=100000.0)),
        scale_factor=4, longest_edge=96, layout="v5",
    ),
}


def build_checkpoint(name, spec, seed):
    d = ROOT / name
    tok = train_tokenizer(**spec["tokenizer"])
    vocab = tok.get_vocab_size()
    eos_id = tok.token_to_id(spec["eos"])
    text = dict(model_type="llama", vocab_size=vocab, rms_norm_eps=1e-5, max_position_embeddings=4096,
                bos_token_id=tok.token_to_id(spec["bos"]), eos_token_id=eos_id, pad_token_id=0, **spec["text"])
    config = Idefics3Config(vision_config=spec["vision"], text_config=text, scale_factor=spec["scale_factor"],
                            image_token_id=tok.token_to_id("<image>"), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    reinit(model, seed)
    model.to(torch.bfloat16).save_pretrained(d)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"],
                                     pad_token=tok.id_to_token(0))
    m = spec["vision"]["image_size"]
    ip = Idefics3ImageProcessorPil(size={"longest_edge": spec["longest_edge"]}, max_image_size={"longest_edge": m})
    q = (m // spec["vision"]["patch_size"]) ** 2 // spec["scale_factor"] ** 2
    proc = Idefics3Processor(image_processor=ip, tokenizer=hf_tok, image_seq_len=q, chat_template=spec["template"])
    proc.save_pretrained(d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos_id], "bos_token_id": text["bos_token_id"]}) + "\n")
    if spec["layout"] == "v4":
        # The published layout: processor settings in preprocessor_config.json, image_seq_len alone.
        pc = json.loads((d / "processor_config.json").read_text())
        ipc = pc.pop("image_processor", None)
        if ipc is not None:
            (d / "preprocessor_config.json").write_text(json.dumps(ipc, indent=2) + "\n")
        tmpl = pc.pop("chat_template", None)
        (d / "processor_config.json").write_text(json.dumps({"image_seq_len": q, "processor_class": "Idefics3Processor"}, indent=2) + "\n")
        if tmpl is not None and not (d / "chat_template.json").exists() and not (d / "chat_template.jinja").exists():
            (d / "chat_template.json").write_text(json.dumps({"chat_template": tmpl}) + "\n")
        cj = d / "chat_template.jinja"
        if cj.exists():
            (d / "chat_template.json").write_text(json.dumps({"chat_template": cj.read_text()}) + "\n")
            cj.unlink()
    return Idefics3Processor.from_pretrained(d, image_processor_class=Idefics3ImageProcessorPil) \
        if False else proc


def photo(name, box=None, size=None):
    im = Image.open(SKDATA / name)
    if box:
        im = im.crop(box)
    if size:
        im = im.resize(size, Image.LANCZOS)
    return im


def exif_bytes(orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def make_images():
    d = ROOT / "images"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = {}

    def save(name, im, **kw):
        im.save(d / name, **kw)
        imgs[name.replace(".", "_")] = name

    save("tiny.png", Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)))
    save("wide.png", photo("astronaut.png", (0, 200, 512, 230), (400, 23)))
    save("tall.jpg", photo("coffee.png", (280, 0, 300, 400), (15, 300)), quality=90)
    save("one_tile.png", photo("chelsea.png", (100, 50, 164, 114), (32, 32)))
    save("exact_grid.png", photo("rocket.jpg", (100, 100, 196, 164)))  # 96×64
    save("large.jpg", photo("astronaut.png"), quality=85)  # 512×512, above every longest edge
    save("gray.png", photo("camera.png", None, (120, 90)))
    g = photo("chelsea.png", None, (90, 60)).convert("RGBA")
    a = np.array(g)
    a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None, :]
    save("rgba.png", Image.fromarray(a))
    save("gray_alpha.png", photo("coins.png", None, (70, 50)).convert("LA"))
    p = photo("coffee.png", None, (80, 53)).quantize(colors=32)
    p.info["transparency"] = 3
    save("palette.png", p, transparency=3)
    p.save(d / "palette_alpha.png", transparency=bytes([0, 128, 255, 40] + [255] * 28))
    imgs["palette_alpha_png"] = "palette_alpha.png"
    key = photo("rocket.jpg", None, (60, 40)).quantize(colors=8).convert("RGB")
    save("rgb_key.png", key, transparency=tuple(key.getpixel((0, 0))))
    grey = photo("camera.png", None, (50, 30)).point(lambda v: v // 32 * 32)
    save("gray_key.png", grey, transparency=grey.getpixel((0, 0)))
    save("anim.gif", photo("rocket.jpg", None, (64, 96)).quantize(colors=64), transparency=5)
    save("bitmap.bmp", photo("coffee.png", None, (70, 47)))
    save("lossy.webp", photo("chelsea.png", None, (100, 66)), quality=80)
    save("lossless.webp", photo("chelsea.png", None, (50, 33)), lossless=True)
    save("gray.jpg", photo("camera.png", None, (77, 131)), quality=90)
    save("progressive.jpg", photo("coffee.png", None, (130, 87)), quality=80, progressive=True)
    save("rotated.jpg", photo("chelsea.png", None, (60, 40)), quality=92, exif=exif_bytes(6))
    save("mirrored.png", photo("rocket.jpg", None, (45, 70)), exif=exif_bytes(2))
    return imgs


def encode(proc, messages, images):
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    return proc(text=prompt, images=images or None, return_tensors="pt")


def user_turn(text, n):
    return [{"role": "user", "content": [{"type": "image"}] * n + [{"type": "text", "text": text}]}]


def main():
    torch.set_num_threads(2)
    ROOT.mkdir(parents=True, exist_ok=True)
    procs = {name: build_checkpoint(name, spec, seed) for seed, (name, spec) in enumerate(CHECKPOINTS.items())}
    imgs = make_images()
    exp = ROOT / "expected"
    if exp.exists():
        shutil.rmtree(exp)
    cases = {}
    for ck, proc in procs.items():
        for key, file in imgs.items():
            cases[f"{ck}__{key}"] = dict(checkpoint=ck, images=[file], prompt="Describe this image.")
        cases[f"{ck}__two_images"] = dict(checkpoint=ck, images=[imgs["large_jpg"], imgs["wide_png"]],
                                          prompt="Compare these two images.")
        cases[f"{ck}__text_only"] = dict(checkpoint=ck, images=[], prompt="What is the capital of France?")
    for name, c in cases.items():
        proc = procs[c["checkpoint"]]
        images = [load_image(str(ROOT / "images" / f)) for f in c["images"]]
        out = encode(proc, user_turn(c["prompt"], len(images)), images)
        c["input_ids"] = out["input_ids"][0].tolist()
        if images:
            pv = np.ascontiguousarray(out["pixel_values"].numpy().astype("<f4"))
            mask = out["pixel_attention_mask"].numpy()
            assert mask.all(), name
            c["pixel_values_shape"] = list(pv.shape)
            c["pixel_values_sha256"] = hashlib.sha256(pv.tobytes()).hexdigest()
            # The uint8 levels behind the values, for diagnosis when a hash differs.
            c["pixel_values_u8_sum"] = int(np.rint((pv * 0.5 + 0.5) * 255).sum())
    (ROOT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")

    # The two-turn, two-image conversation of the original example, replayed end to end.
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What do we see in this image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "In this image, we can see the city of New York, and more specifically the Statue of Liberty."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And how about this image?"}]},
    ]
    (ROOT / "chat.json").write_text(json.dumps(chat, indent=1) + "\n")
    gens = {}
    for ck, proc in procs.items():
        images = [load_image(str(ROOT / "images" / imgs[k])) for k in ("large_jpg", "rotated_jpg")]
        inputs = encode(proc, chat, images)
        model = Idefics3ForConditionalGeneration.from_pretrained(ROOT / ck, dtype=torch.float32).eval()
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        gens[ck] = dict(chat="chat.json", images=[imgs["large_jpg"], imgs["rotated_jpg"]], max_new_tokens=24,
                        dtype="f32", prompt_ids=inputs["input_ids"][0].tolist(), generated_ids=new,
                        text=proc.decode(new, skip_special_tokens=True))
        print(ck, "generated", new)
    (ROOT / "generate.json").write_text(json.dumps(gens, indent=1) + "\n")

    # Full-size settings on the real photos: too large to store, so their sha256 is kept.
    realistic = {}
    examples = Path("examples")
    for setting, (L, M) in {"idefics3": (1456, 364), "smolvlm": (2048, 512)}.items():
        ip = Idefics3ImageProcessorPil(size={"longest_edge": L}, max_image_size={"longest_edge": M})
        for f in sorted(p for p in os.listdir(examples) if p.endswith((".png", ".jpg"))):
            im = load_image(str(examples / f))
            pv = ip(images=[[im]], return_tensors="np", return_row_col_info=True)
            arr = np.ascontiguousarray(pv["pixel_values"][0].astype("<f4"))
            realistic[f"{setting}/{f}"] = dict(longest_edge=L, tile=M, shape=list(arr.shape),
                                               rows=int(pv["rows"][0][0]), cols=int(pv["cols"][0][0]),
                                               sha256=hashlib.sha256(arr.tobytes()).hexdigest())
    (ROOT / "realistic.json").write_text(json.dumps(realistic, indent=1) + "\n")
    print(json.dumps(realistic, indent=1))


if __name__ == "__main__":
    main()
