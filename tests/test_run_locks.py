from fmnist import artifacts, run_locks


def test_a_glance_from_fmnist_runs_does_not_make_a_claim_fail(tmp_path):
    import fcntl
    import threading

    (tmp_path / artifacts.LOCK).touch()
    with open(tmp_path / artifacts.LOCK, "rb") as glance:
        fcntl.flock(glance, fcntl.LOCK_SH)  # run_locks.being_trained's probe, caught in the act
        threading.Timer(0.3, fcntl.flock, (glance, fcntl.LOCK_UN)).start()
        with run_locks.claim_run(tmp_path):
            assert run_locks.being_trained(tmp_path)
    assert not run_locks.being_trained(tmp_path)
