"""Runnable demonstrations: `fastrnn demo NAME` (or `python -m fastrnn demo NAME`).

- charlm:   character-level LSTM language model (many-to-many, then one-to-many generation)
- forecast: CO2 forecasting with a GRU (many-to-many), against naive baselines
- memory:   the adding problem, vanilla RNN against LSTM (many-to-one), vanishing gradients
(examples/seq2seq.py shows sequence to sequence, N to M.)
"""
DEMOS = {
    "charlm": "fastrnn.demos.charlm",
    "forecast": "fastrnn.demos.forecast",
    "memory": "fastrnn.demos.memory",
}
