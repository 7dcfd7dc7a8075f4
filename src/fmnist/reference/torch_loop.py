"""The spec's model as a plain PyTorch eager loop (Adam, batch 64, validation each epoch).

Usage: python torch_loop.py DATA.npz EPOCHS  (prints one JSON line with per-epoch seconds)
"""

import json
import sys
import time

import numpy as np
import torch
from torch import nn

data = np.load(sys.argv[1])
epochs = int(sys.argv[2])
torch.manual_seed(1234)  # as a careful script would; the timing does not depend on it
x = torch.from_numpy(data["x_train"].reshape(-1, 784).astype("float32") / 255.0)
y = torch.from_numpy(data["y_train"].astype("int64"))
split = int(len(x) * 0.8)
x_train, y_train, x_val, y_val = x[:split], y[:split], x[split:], y[split:]

blocks, width = [], 784
for units in (512, 256, 64, 32):
    blocks += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.ReLU(), nn.Dropout(0.3)]
    width = units
model = nn.Sequential(*blocks, nn.Linear(width, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()

seconds = []
for epoch in range(epochs):
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(x_train))
    for i in range(0, len(order), 64):
        batch = order[i:i + 64]
        optimizer.zero_grad()
        loss_fn(model(x_train[batch]), y_train[batch]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        val_loss = loss_fn(model(x_val), y_val).item()
    seconds.append(time.perf_counter() - start)
print(json.dumps({"epoch_seconds": seconds, "threads": torch.get_num_threads()}))  # left at PyTorch's default
