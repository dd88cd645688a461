"""Recurrent cells. A cell class is built as cell(input_size=..., **its config) and runs one direction of one
layer: forward(x [B, T, input_size], state | None) -> (outputs [B, T, output_size], state). It exposes
`output_size`. A class with `fused_stack = True` instead builds the whole stack itself (torch's cuDNN RNNs):
cell(input_size, num_layers, bidirectional, dropout) and forward(x, lengths, state)."""
