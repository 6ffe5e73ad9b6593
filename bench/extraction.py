"""Extraction speed: the engine against bare forward passes, in one run.

Cold extraction (cache off) of N prompts of mixed length at a middle layer, reported as a
ratio to
  (a) a bare full-depth ``model(...)`` forward over the same prompts in the given order;
  (b) the floor: a bare forward truncated after that layer, over length-sorted batches.
Target: engine <= 1.15x the floor.

    python bench/extraction.py [--n 256] [--batch-size 8] [--device cpu|cuda]
        [--dtype float32|bfloat16|float16] [--random-weights] [--repeats 2]

``--random-weights`` builds a random model of the bundled model's config (for GPU speed
checks, where only timing matters).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

os.environ.setdefault("LMPROBE_PROGRESS", "0")

WORDS = (
    "the model reads a prompt and the probe scores its hidden state for signs of misuse "
    "such as synthesis routes for dangerous chemicals or exploits against network services "
    "while ordinary homework questions about chemistry and programming should pass"
).split()


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """Mixed lengths: tens to hundreds of tokens."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice([10, 25, 50, 100, 200])
        k = max(8, int(k * rng.uniform(0.7, 1.3)))
        out.append(f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(k)))
    return out


def sync(device):
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load(args):
    from lmprobe_jupyter.engine.models import DEFAULT_MODEL, LoadedModel, load_model

    if not args.random_weights:
        return load_model(DEFAULT_MODEL, device=args.device, dtype=args.dtype)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lmprobe_jupyter.engine.models import resolve_device, resolve_dtype, resolve_model

    path = resolve_model(DEFAULT_MODEL)[1] if args.config is None else args.config
    cfg = AutoConfig.from_pretrained(path)
    dev = resolve_device(args.device)
    dt = resolve_dtype(args.dtype, dev)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).to(dev, dt).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return LoadedModel(
        name="random-" + cfg.model_type,
        model=model,
        tokenizer=tok,
        fingerprint="random",
        n_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        device=dev,
        dtype=dt,
        max_length=cfg.max_position_embeddings,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--config", default=None, help="folder with a config.json (random weights)")
    args = ap.parse_args(argv)

    import torch

    from lmprobe_jupyter.engine.extraction import Extractor
    from lmprobe_jupyter.engine.models import decoder_layers

    load_s = None
    if not args.random_weights:
        from lmprobe_jupyter.engine.models import DEFAULT_MODEL, load_model, unload_all

        # The first load materializes the GGUF (once per machine) and pays Python's
        # one-off imports; the figure reported is a second load from the safetensors copy.
        load_model(DEFAULT_MODEL, device=args.device, dtype=args.dtype)
        unload_all()
        t0 = time.perf_counter()
        load_model(DEFAULT_MODEL, device=args.device, dtype=args.dtype)
        load_s = time.perf_counter() - t0
    loaded = load(args)
    layer = loaded.n_layers // 2 if args.layer is None else args.layer
    prompts = make_prompts(args.n)
    tok = loaded.tokenizer
    ids = [tok(p)["input_ids"] for p in prompts]
    n_tokens = sum(map(len, ids))
    model = loaded.model
    dev = loaded.device
    bs = args.batch_size

    # the same right-padding collation the engine uses, so only the forward differs
    collate = Extractor(loaded, batch_size=bs, progress=False, use_cache=False)._collate

    def batches(order):
        for i in range(0, len(order), bs):
            x, m = collate([ids[j] for j in order[i : i + bs]])
            yield x.to(dev), m.to(dev)

    def bare_full():
        with torch.inference_mode():
            for x, m in batches(list(range(len(ids)))):
                model(input_ids=x, attention_mask=m, use_cache=False)

    blocks = decoder_layers(model)
    base = getattr(model, model.base_model_prefix)
    sorted_order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))

    def floor():
        keep = base.layers
        base.layers = torch.nn.ModuleList(list(blocks)[: layer + 1])
        try:
            with torch.inference_mode():
                for x, m in batches(sorted_order):
                    base(input_ids=x, attention_mask=m, use_cache=False)
        finally:
            base.layers = keep

    ext = Extractor(loaded, batch_size=bs, progress=False, use_cache=False)

    def engine():
        out = ext.pooled(prompts, [layer], "mean")
        assert out[layer].shape == (len(prompts), loaded.hidden_size)

    # warm-up (allocator, kernels)
    ext.pooled(prompts[:bs], [layer], "mean")
    t_full = timed(bare_full, args.repeats, dev)
    t_floor = timed(floor, args.repeats, dev)
    t_engine = timed(engine, args.repeats, dev)
    name = torch.cuda.get_device_name(dev) if str(dev).startswith("cuda") else "CPU"
    print(
        f"extraction bench: {loaded.name} on {name} ({loaded.dtype}), {len(prompts)} prompts, "
        f"{n_tokens} tokens, layer {layer}/{loaded.n_layers}, batch {bs}, median of {args.repeats}"
    )
    if load_s is not None:
        print(f"  bundled model reload (safetensors copy): {load_s:6.3f} s")
    print(f"  bare full-depth forward (given order): {t_full:8.3f} s")
    print(f"  floor (truncated at layer, sorted):    {t_floor:8.3f} s")
    print(f"  engine cold extraction:                {t_engine:8.3f} s")
    print(f"  engine / full forward = {t_engine / t_full:.3f}x")
    print(f"  engine / floor        = {t_engine / t_floor:.3f}x  (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
