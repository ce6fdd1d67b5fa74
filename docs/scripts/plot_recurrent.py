"""Draw what an LSTM carries from step to step, computed by portanet itself.

Trains a small LSTM forecaster on noisy sine waves (``make_sine_forecast``: from 40 steps,
predict the next value), then feeds it one sequence a step at a time with ``initial_state``
and ``return_state=True``, recording h_t and the cell c_t of every unit. Writes
docs/img/recurrent_lstm_states.png (600 x 600 pixels, a palette PNG). Needs matplotlib
(``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_recurrent.py

Everything runs on the NumPy backend in float64, seed 0: the picture is of the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_math import OUT, save  # the shared PNG writer

import portanet as pn
from portanet.data.sequences import make_sine_forecast
from portanet.layers.lstm import LSTM

HIDDEN, STEPS = 8, 40


def train() -> pn.Sequential:
    """LSTM(1, 8) -> Dense(8, 1), MSE, Adam with gradient clipping by global norm."""
    x, y = make_sine_forecast(2000, seq_len=STEPS, horizon=1, seed=0)
    model = pn.Sequential([LSTM(1, HIDDEN), pn.layers.Dense(HIDDEN, 1)], loss="mse",
                          optimizer=pn.optimizers.Adam(0.01, global_clip_norm=1.0),
                          dtype="float64", seed=0)
    history = model.fit(x, y, epochs=15, batch_size=64, verbose=0, seed=0)
    print(f"trained: MSE {history.history['loss'][-1]:.4f} (predicting 0 scores 0.5)")
    return model


def trace(model: pn.Sequential, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h_t and c_t (T, H) of the model's LSTM on one sequence x (T, 1), one step per call."""
    trained = model.layers[0]
    stepper = LSTM(1, HIDDEN, return_state=True).build(dtype="float64")
    stepper.set_named_parameters(dict(trained.parameters))
    state = None
    hs, cs = [], []
    for t in range(x.shape[0]):
        (_, h, c), _ = stepper.forward(pn.asarray(x[None, t:t + 1]), initial_state=state)
        state = (h, c)
        hs.append(pn.to_numpy(h)[0])
        cs.append(pn.to_numpy(c)[0])
    return np.asarray(hs), np.asarray(cs)


def main() -> list[Path]:
    pn.set_backend("numpy")
    model = train()
    x, y = make_sine_forecast(1, seq_len=STEPS, horizon=1, seed=7)
    hs, cs = trace(model, x[0].astype(np.float64))
    forecast = float(pn.to_numpy(model.predict(x.astype(np.float64)))[0, 0])

    fig, axes = plt.subplots(3, 1, figsize=(6.0, 6.0), sharex=True)
    t = np.arange(STEPS)
    axes[0].plot(t, x[0, :, 0], color="0.3", marker=".", linewidth=1.0, label="input x_t")
    axes[0].plot([STEPS], y[0], "o", color="tab:green", label="next value")
    axes[0].plot([STEPS], [forecast], "x", color="tab:red", markersize=9, label="forecast")
    axes[0].set_title("LSTM(1, 8) forecasting a noisy sine: what it carries")
    axes[0].set_ylim(-1.8, 1.3)  # room for the legend below the wave
    axes[0].legend(loc="lower left", frameon=False, fontsize=8, ncol=3)
    for unit in range(HIDDEN):
        axes[1].plot(t, hs[:, unit], linewidth=1.2)
        axes[2].plot(t, cs[:, unit], linewidth=1.2)
    axes[1].set_ylabel("h_t = o tanh(c_t)")
    axes[1].set_ylim(-1.05, 1.05)
    axes[2].set_ylabel("cell c_t")
    axes[2].set_xlabel("time step t")
    for ax in axes:
        ax.axhline(0.0, color="0.85", linewidth=0.8)
    fig.tight_layout()
    path = OUT / "recurrent_lstm_states.png"
    save(fig, path)
    return [path]


if __name__ == "__main__":
    for written in main():
        print(written)
