"""Defaults that both the command line and a command module use, written once; no imports, so `--help` stays fast."""

# Where run directories go, and where the commands look for them (relative to the current folder).
RUNS_DIR = "runs"
MIB = 2**20  # bytes in a MiB, the unit of the size limits below
# predict and serve call the model unsure when its top probability is under this, and list so many classes.
UNSURE_BELOW = 0.5
TOP_K = 3
# serve: the largest request body, and the rows per shared forward pass (1 turns batching off; the load test
# measures both).
MAX_UPLOAD_MIB = 10
MAX_BATCH = 64
MAX_INPUTS = 64  # inputs (files or arrays) in one request
# predict: the largest file it reads.
MAX_FILE_MIB = 64
# A log record marked so (extra={PLAIN_LOG: True}) is kept under -q at WARNING but printed without "fmnist: warning:"
# (serve's address on a free port, which a script reads).
PLAIN_LOG = "fmnist_plain"
# tune: trials one process runs, and the study's name.
TUNE_TRIALS = 20
TUNE_STUDY = "fmnist"
TRIAL_PREFIX = "trial-"  # a trial's run is named so, with its number: trial-0003, in RUNS_DIR/STUDY/
# The settings of a trial cut short are taken up again, to finish its run, at most so many times in all: not for
# ever, since settings that kill their worker (say, by memory) would loop.
MAX_TRIAL_ATTEMPTS = 4
# A run's name: at most so many bytes (a file name holds 255, and the run's folder adds its time before the name);
# the best trial of a tune study is named after the study, with BEST_SUFFIX.
MAX_NAME_BYTES = 200
BEST_SUFFIX = "-best"
MAX_STUDY_NAME_BYTES = MAX_NAME_BYTES - len(BEST_SUFFIX)
# train --seeds: each seed is a full training, more than this is a typing slip (the seeds' list would fill the memory).
MAX_SEEDS = 1000
# bench: where the JSON goes (its chart beside it, as .png).
BENCH_JSON = "bench.json"
EXPORT_PARITY_IMAGES = 1000  # test images an export is checked on against Keras
EXPORT_TOLERANCE = 1e-4  # the most a class's probability may differ there
STDIN = "-"  # the input name that reads an image from standard input (this argument alone, not ./-)
