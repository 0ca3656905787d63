"""fastrnn: fast CPU recurrent networks for NumPy.

RNN, LSTM and GRU layers (and single-step cells) whose forward and
backpropagation through time run in compiled, multi-threaded kernels, with
PyTorch's parameter names, shapes and gate orders.
"""
__version__ = "0.1.0"

from fastrnn import convert, nn, optim
from fastrnn._threads import get_num_threads, set_num_threads, show_config
from fastrnn.cells import GRUCell, LSTMCell, RNNCell
from fastrnn.clip import clip_grad_norm, clip_grad_value
from fastrnn.io import load, load_checkpoint, register, save
from fastrnn.layers import GRU, LSTM, RNN

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "clip_grad_norm", "clip_grad_value",
    "nn", "optim", "convert", "save", "load", "load_checkpoint", "register",
    "set_num_threads", "get_num_threads", "show_config",
    "__version__",
]
