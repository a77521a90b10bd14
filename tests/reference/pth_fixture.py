"""The tiny-a checkpoint's weights as PyTorch pickles, for the hub-layout tests (tests/hub_layouts.rs).

Writes tests/fixtures/tiny-a-pth/: pytorch_model.bin (the whole state dict, torch.save's zip
format, as transformers writes it) and pytorch_model-0000{1,2}-of-00002.bin with
pytorch_model.bin.index.json (the same tensors split in two shards). The tensors are exactly those
of tests/fixtures/tiny-a/model.safetensors.

Usage: "$(tests/reference/setup.sh)" tests/reference/pth_fixture.py
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def main():
    state = load_file(FIXTURES / "tiny-a" / "model.safetensors")
    out = FIXTURES / "tiny-a-pth"
    out.mkdir(exist_ok=True)
    torch.save(state, out / "pytorch_model.bin")
    names = sorted(state)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    weight_map = {}
    for i, part in enumerate(shards, 1):
        file = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({n: state[n] for n in part}, out / file)
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"{len(names)} tensors, {total} bytes, into {out}")


if __name__ == "__main__":
    main()
