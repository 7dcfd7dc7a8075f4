from fmnist.cli import run

run()
