"""Hand-written reference scripts that `fmnist bench` times against our training path."""
