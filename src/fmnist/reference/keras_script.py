"""The spec's recipe as a user would write it: plain Keras `model.fit`, no tuning of any kind.

Usage: python keras_script.py DATA.npz EPOCHS  (prints one JSON line with per-epoch seconds)
"""

import json
import sys
import time

import keras
import numpy as np
from keras import layers

data = np.load(sys.argv[1])
epochs = int(sys.argv[2])
keras.utils.set_random_seed(1234)  # as a careful script would; the timing does not depend on it
x = data["x_train"].reshape(-1, 784).astype("float32") / 255.0
y = data["y_train"]

model = keras.Sequential([keras.Input(shape=(784,))])
for units in (512, 256, 64, 32):
    model.add(layers.Dense(units))
    model.add(layers.BatchNormalization())
    model.add(layers.Activation("relu"))
    model.add(layers.Dropout(0.3))
model.add(layers.Dense(10, activation="softmax"))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.start)


seconds = []
model.fit(
    x, y, validation_split=0.2, batch_size=64, epochs=epochs, verbose=0,
    callbacks=[
        EpochTimer(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=3),
    ],
)
print(json.dumps({"epoch_seconds": seconds}))
