#!/usr/bin/python3
"""The student as a PyTorch module, for checking that ldaproj loads weights
trained in Python unchanged.

Builds ProjectionTransformer with torch.nn.MultiheadAttention for several
configurations, randomises every parameter, and writes for each one
  <name>.safetensors          the weights, config in __metadata__
  <name>.expected.safetensors "queries" and PyTorch's "output" for them
into OUT_DIR. Exit code 77 when torch is not installed (the caller skips).

Usage: student_reference.py OUT_DIR
"""
import json
import struct
import sys

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit(77)


class CrossAttentionBlock(nn.Module):
    """One block: the query token cross-attends to learned keys/values."""

    def __init__(self, dim, num_heads, num_keys, ff_dim, with_ffn, eps):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(num_keys, dim) / dim ** 0.5)
        self.values = nn.Parameter(torch.randn(num_keys, dim) / dim ** 0.5)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.with_ffn = with_ffn
        if with_ffn:
            self.ffn = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
            self.norm2 = nn.LayerNorm(dim, eps=eps)

    def attend(self, x):
        batch = x.shape[0]
        keys = self.keys.unsqueeze(0).expand(batch, -1, -1)
        values = self.values.unsqueeze(0).expand(batch, -1, -1)
        mixed, _ = self.attention(x.unsqueeze(1), keys, values, need_weights=False)
        x = self.norm1(x + mixed.squeeze(1))
        if self.with_ffn:
            x = self.norm2(x + self.ffn(x))
        return x


class ProjectionTransformer(CrossAttentionBlock):
    """input_proj [-> residual MLP] -> block 0 (this module) -> blocks["1"], ..."""

    def __init__(self, dim, num_heads, keys_per_head, ff_dim, layers, variant, eps=1e-5):
        num_keys = num_heads * keys_per_head
        super().__init__(dim, num_heads, num_keys, ff_dim, variant == "block", eps)
        self.input_proj = nn.Linear(dim, dim)
        self.variant = variant
        if variant == "mlp-attention":
            self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.blocks = nn.ModuleDict({
            str(b): CrossAttentionBlock(dim, num_heads, num_keys, ff_dim, variant == "block", eps)
            for b in range(1, layers)
        })

    def forward(self, queries):
        x = self.input_proj(queries)
        if self.variant == "mlp-attention":
            x = x + self.mlp(x)
        x = self.attend(x)
        for block in self.blocks.values():
            x = block.attend(x)
        return x


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, tensor in tensors.items():
        values = tensor.detach().to(torch.float32).contiguous().flatten().tolist()
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for blob in blobs:
            out.write(blob)


CONFIGS = {
    "block_1": dict(dim=32, num_heads=4, keys_per_head=3, ff_dim=48, layers=1, variant="block"),
    "block_2": dict(dim=32, num_heads=2, keys_per_head=5, ff_dim=64, layers=2, variant="block"),
    "attention_1": dict(dim=24, num_heads=3, keys_per_head=4, ff_dim=48, layers=1, variant="attention"),
    "mlp_attention_2": dict(dim=24, num_heads=6, keys_per_head=2, ff_dim=40, layers=2, variant="mlp-attention"),
}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    torch.manual_seed(1234)
    for name, config in CONFIGS.items():
        model = ProjectionTransformer(**config)
        # Move every parameter off its initial value (zero biases, unit norms)
        # so that a mistake cannot hide behind an identity.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        model.eval()
        queries = torch.nn.functional.normalize(torch.randn(7, config["dim"]), dim=1)
        with torch.no_grad():
            output = model(queries)
        metadata = {"format": "ldaproj-student", "config": json.dumps(dict(config, layer_norm_eps=1e-5)),
                    "trained_with": "pytorch " + torch.__version__}
        write_safetensors(f"{out_dir}/{name}.safetensors", dict(model.named_parameters()), metadata)
        write_safetensors(f"{out_dir}/{name}.expected.safetensors", {"queries": queries, "output": output}, {})
    print(" ".join(CONFIGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
