"""Fashion-MNIST's fixed facts: its classes, image size and training set; no imports, so the CLI's start stays light."""

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SIDE = 28
NUM_CLASSES = len(CLASS_NAMES)
NUM_FEATURES = IMAGE_SIDE * IMAGE_SIDE  # the flattened pixels every model takes
TRAINING_IMAGES = 60_000
