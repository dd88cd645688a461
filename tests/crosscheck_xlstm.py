"""One-off cross-check of the mlstm cell against the xlstm package's own plain-PyTorch mLSTM block (xlstm 2.0.6,
NX-AI), with copied weights. Not part of the test suite: `pip install xlstm` also pulls mlstm_kernels and ninja,
so it is not a clean test dependency; the wheel is used unpacked, without its dependencies:

    pip download xlstm==2.0.6 --no-deps -d /tmp/xl && unzip -q /tmp/xl/xlstm-2.0.6-py3-none-any.whl -d /tmp/xl/ex
    PYTHONPATH=/tmp/xl/ex:. python tests/crosscheck_xlstm.py
"""

import torch
from xlstm.blocks.mlstm.block import mLSTMBlock, mLSTMBlockConfig
from xlstm.blocks.mlstm.layer import mLSTMLayerConfig

from src.models.cells.xlstm import MLSTM

torch.manual_seed(0)
D, NH, T = 32, 2, 12  # inner 64: the package rounds its up-projection to a multiple of 64
theirs = mLSTMBlock(
    mLSTMBlockConfig(
        mlstm=mLSTMLayerConfig(
            embedding_dim=D,
            num_heads=NH,
            proj_factor=2.0,
            conv1d_kernel_size=4,
            qkv_proj_blocksize=4,
            context_length=T,
            bias=True,
        ),
        _num_blocks=1,
        _block_idx=0,
    )
).double()
mine = MLSTM(D, D, num_heads=NH, proj_factor=2, conv_kernel=4, qkv_blocksize=4, scan="parallel", chunk=5).double()
with torch.no_grad():
    for p in theirs.parameters():  # away from the initial values (zeros, ones), so every weight matters
        p.add_(0.3 * torch.randn_like(p))
    layer, cell = theirs.xlstm, theirs.xlstm.mlstm_cell
    mine.norm.weight.copy_(theirs.xlstm_norm.weight_proxy)
    mine.norm.bias.zero_()
    mine.up.weight.copy_(layer.proj_up.weight), mine.up.bias.copy_(layer.proj_up.bias)
    mine.conv.weight.copy_(layer.conv1d.conv.weight), mine.conv.bias.copy_(layer.conv1d.conv.bias)
    for name in "qkv":
        proj = getattr(layer, f"{name}_proj")
        getattr(mine, name).weight.copy_(proj.weight), getattr(mine, name).bias.copy_(proj.bias)
    for gate in ("i_gate", "f_gate"):
        src = cell.igate if gate == "i_gate" else cell.fgate
        getattr(mine, gate).weight.copy_(src.weight), getattr(mine, gate).bias.copy_(src.bias)
    mine.out_weight.copy_(cell.outnorm.weight_proxy)
    mine.skip.copy_(layer.learnable_skip)
    mine.down.weight.copy_(layer.proj_down.weight), mine.down.bias.copy_(layer.proj_down.bias)
    x = torch.randn(3, T, D, dtype=torch.float64)
    ref = theirs(x)
    for scan in ("parallel", "sequential"):
        mine.scan = scan
        out, _ = mine(x)
        print(
            f"{scan}: max |mine - xlstm| = {(out - ref).abs().max().item():.2e} (outputs' scale "
            f"{ref.abs().max().item():.2f})"
        )

# -- sLSTM: the package's sLSTMBlock with its plain-PyTorch ("vanilla") backend ---------------------------------------
from xlstm.blocks.slstm.block import sLSTMBlock, sLSTMBlockConfig  # noqa: E402
from xlstm.blocks.slstm.layer import sLSTMLayerConfig  # noqa: E402
from xlstm.components.feedforward import FeedForwardConfig  # noqa: E402

from src.models.cells.xlstm import SLSTM  # noqa: E402

torch.manual_seed(0)
D, NH = 64, 4  # the package rounds the feed-forward's width up to a multiple of 64: 2 x 64 = 128 here
theirs = sLSTMBlock(
    sLSTMBlockConfig(
        slstm=sLSTMLayerConfig(embedding_dim=D, num_heads=NH, conv1d_kernel_size=4, backend="vanilla"),
        feedforward=FeedForwardConfig(proj_factor=2.0, act_fn="gelu", embedding_dim=D),
        _num_blocks=1,
        _block_idx=0,
    )
)
mine = SLSTM(D, D, num_heads=NH, conv_kernel=4, ffn_factor=2.0)
with torch.no_grad():
    for p in theirs.parameters():
        p.add_(0.3 * torch.randn_like(p))
    layer, cell = theirs.xlstm, theirs.xlstm.slstm_cell
    mine.norm.weight.copy_(theirs.xlstm_norm.weight_proxy), mine.norm.bias.zero_()
    mine.conv.weight.copy_(layer.conv1d.conv.weight), mine.conv.bias.copy_(layer.conv1d.conv.bias)
    # the layer feeds cat([fgate(conv), igate(conv), zgate(x), ogate(x)]) as (i~, f~, z~, o~)
    for mine_gate, their_gate in zip(mine.gates_x, (layer.fgate, layer.igate, layer.zgate, layer.ogate)):
        mine_gate.weight.copy_(their_gate.weight)
    d = D // NH
    mine.recurrent.copy_(cell._recurrent_kernel_.reshape(NH, 4, d, d))  # internal [NH, 4*d, d], gate-major rows
    mine.bias.copy_(cell._bias_.reshape(4, D))
    mine.out_weight.copy_(layer.group_norm.weight_proxy)
    mine.ffn_norm.weight.copy_(theirs.ffn_norm.weight_proxy), mine.ffn_norm.bias.zero_()
    mine.ffn_up.weight.copy_(theirs.ffn.proj_up.weight), mine.ffn_down.weight.copy_(theirs.ffn.proj_down.weight)
    x = torch.randn(3, 12, D)
    ref, out = theirs(x), mine(x)[0]
    print(
        f"slstm: max |mine - xlstm| = {(out - ref).abs().max().item():.2e} (float32; outputs' scale "
        f"{ref.abs().max().item():.2f})"
    )
