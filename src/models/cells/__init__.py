"""Recurrent cells. A cell class is built as cell(input_size=..., **its config) and runs one direction of one
layer: forward(x [B, T, input_size], state | None) -> (outputs [B, T, output_size], state). It exposes
`output_size`. A class with `fused_stack = True` instead builds the whole stack itself (torch's cuDNN RNNs):
cell(input_size, num_layers, bidirectional, dropout) and forward(x, lengths, state).

The state is whatever the cell returns (a tensor, or a tuple such as (h, c)); it must be accepted back as the
initial state of the next chunk (truncated BPTT carries it, detached). The constructor's arguments are the
cell's settings: the stack rejects a config key that is not one of them (src/models/stack.py).

    fused.py    rnn, rnn_relu, lstm, gru: torch's own
    lstm.py     the LSTM engine: lstm_ref, lstm_tf, peephole_lstm, lstmp, layernorm_lstm, cifg_lstm
    greff.py    lstm_variant: Greff et al.'s vanilla LSTM and eight variants, on the same engine
    gru.py      gru_ref, gru_v1
    minimal.py  minimal;  indrnn.py  indrnn;  minrnn.py  mingru, minlstm (parallel scan; in their block)
    lru.py      lru: Orvieto et al.'s Linear Recurrent Unit (complex diagonal recurrence), in its residual block
    mamba.py    mamba: Gu and Dao's selective SSM block (input-dependent Delta, B, C; causal conv; gated output)
    xlstm.py    mlstm, slstm: xLSTM's matrix-memory LSTM (chunkwise parallel form) and scalar-memory LSTM
                (head-wise recurrence, step by step), each in the paper's block
    rglru.py    rglru: Griffin's Real-Gated LRU in Hawk's residual block (gated branch, temporal conv, gated MLP)
    attention.py  attention: causal multi-head self-attention with RoPE (+ MLP), the non-recurrent reference;
                its state is the key/value cache
    scan.py     what the modern cells share: the chunked parallel scan of h_t = a_t h_{t-1} + b_t, the causal
                depthwise convolution with its carried tail, the scan/chunk settings
    base.py     what they share: checked settings, initialisation, the TorchScript switch
"""
