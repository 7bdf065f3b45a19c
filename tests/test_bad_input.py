"""Bad input and faults, one class per section: where each enters (config load, shard write and open,
checkpoint load), the error names the place and what is wrong, and nothing half-written stays behind."""

import copy
import errno
import pickle

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from s3vae import configs
from s3vae.data import ShardError, atomic_h5, create_frames, open_shard
from s3vae.utils import CheckpointError, load_weights_only


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


@pytest.fixture()
def config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def merged(config, extra):
    """``extra`` merged over ``config`` as Snakemake merges an extra --configfile (nested dicts update)."""
    out = copy.deepcopy(config)

    def update(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                update(a[k], v)
            else:
                a[k] = v

    update(out, extra)
    return out


# 1. A value's type does not depend on where it is written: only --config strings are typed.

@pytest.mark.parametrize("extra,path", [
    ({"train": {"epochs": "3"}}, "train.epochs"),
    ({"train": {"lr": "0.001"}}, "train.lr"),
    ({"train": {"preload": "true"}}, "train.preload"),
    ({"datasets": {"sprites": {"n_shards": "2"}}}, "datasets.sprites.n_shards"),
])
def test_quoted_numbers_in_a_config_file_are_rejected(config, schema, extra, path):
    with pytest.raises(configs.ConfigError) as e:
        configs.check_config(merged(config, extra), schema)
    text = str(e.value)
    assert text.startswith(f"config: {path}: ") and "without quotes" in text, text
    assert len(text.splitlines()) == 1  # the key path and reason, not the schema


@pytest.mark.parametrize("override,path,value", [
    ({"train": {"epochs": "3"}}, ("train", "epochs"), 3),
    ({"train": {"lr": "0.001"}}, ("train", "lr"), 0.001),
    ({"train": {"preload": "false"}}, ("train", "preload"), False),
])
def test_the_same_values_from_the_command_line_are_typed(config, schema, override, path, value):
    cfg = merged(config, override)
    configs.check_config(cfg, schema, cli_overrides=override)
    assert cfg[path[0]][path[1]] == value and type(cfg[path[0]][path[1]]) is type(value)


# 2. Every name a config refers to is checked when the DAG is built, with the valid names.

@pytest.mark.parametrize("extra,start,valid", [
    ({"table1": {"rows": ["baseline", "fulll"]}}, "table1.rows[1]: 'fulll' is no variant", "(did you mean 'full'?)"),
    ({"table3": {"rows": ["mocogan"]}}, "table3.rows[0]: 'mocogan' is no variant", "fhvae"),
    ({"targets": ["sprits"]}, "targets[0]: 'sprits' is no dataset", "(did you mean 'sprites'?)"),
    ({"table2": {"datasets": ["fsd"]}}, "table2.datasets[0]: 'fsd' is no dataset (did you mean 'fsdd'?)", "sprites"),
    ({"swap": {"extra_rows": ["monkeynett"]}}, "swap.extra_rows[0]: 'monkeynett' is no swap-only system",
     "monkeynet"),
    ({"train_overrides": {"spirtes": {"epochs": 1}}}, "train_overrides.spirtes: 'spirtes' is no dataset", "sprites"),
    ({"seed_overrides": {"fsd": [1, 2]}}, "seed_overrides.fsd: 'fsd' is no dataset", "fsdd"),
    ({"not_implemented": ["dsvea"]}, "not_implemented[0]: 'dsvea' is no model or table row", "dsvae"),
])
def test_unknown_names_are_rejected_with_the_valid_ones(config, schema, extra, start, valid):
    with pytest.raises(configs.ConfigError) as e:
        configs.check_config(merged(config, extra), schema)
    assert str(e.value).startswith(f"config: {start}") and valid in str(e.value), str(e.value)


def test_every_problem_is_listed_once(config, schema):
    cfg = merged(config, {"table1": {"rows": ["fulll"]}, "targets": ["sprits", "fsdd"]})
    with pytest.raises(configs.ConfigError) as e:
        configs.check_config(cfg, schema)
    lines = str(e.value).splitlines()
    assert lines[0] == "config: 2 problems:" and len(lines) == 3


def test_the_workflow_reports_a_bad_name_and_a_quoted_number_before_anything_runs(tmp_path):
    from test_workflow import copy_workflow, snakemake

    wd = copy_workflow(tmp_path)
    (wd / "bad.yaml").write_text("table1: {rows: [fulll]}\n")
    proc = snakemake(wd, "-n", check=False, configfiles=("tiny.yaml", "bad.yaml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "table1.rows[0]: 'fulll' is no variant" in out, out[-2000:]
    (wd / "bad.yaml").write_text("train: {epochs: \"3\"}\n")
    proc = snakemake(wd, "-n", check=False, configfiles=("tiny.yaml", "bad.yaml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "train.epochs: '3' is not of type 'integer'" in out, out[-2000:]
    proc = snakemake(wd, "-n", "--config", "train={\"epochs\": \"3\"}", check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]


# 3. Layer counts: tests/test_model.py (test_bad_widths_state_the_needed_layer_counts).

# 4. A full disk while a shard is written: a clear error, no partial file, a rerun equal to a clean run.

def frames(n=6):
    return np.random.default_rng(0).integers(0, 255, (n, 4, 8, 8, 3), dtype=np.uint8)


def test_too_little_free_space_is_refused_before_the_write(tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "train_0.h5"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ShardError, match=rf"{out}: no space left on device \(writing it needs about .* MiB, "
                                         r"0\.0 MiB are free\); free space in"):
        with atomic_h5(out) as f:
            create_frames(f, frames())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("Can't write data (file write failed: time = Fri Dec  4, filename = 'x', errno = 28, "
            "error message = 'No space left on device')"),
    RuntimeError("Can't decrement id ref count (file write failed: errno = 28)"),
])
def test_a_write_that_runs_out_of_space_names_the_file_and_leaves_nothing(tmp_path, failure):
    out = tmp_path / "test_1.h5"
    with pytest.raises(ShardError, match=rf"{out}: no space left on device .*the partial file was removed"):
        with atomic_h5(out) as f:
            create_frames(f, frames())
            raise failure
    assert list(tmp_path.iterdir()) == []
    with atomic_h5(out) as f:  # after space is freed, the rerun writes the shard a clean run writes
        create_frames(f, frames())
    with open_shard(out, ["frames"]) as f:
        np.testing.assert_array_equal(f["frames"][:], frames())


@pytest.mark.parametrize("fill_at", [0, 1 << 16, 10 ** 9, "fsync"])
def test_a_disk_that_fills_at_any_point_of_the_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch,
                                                                                      fill_at):
    """The free-space check passed, then the disk fills: at the first byte, part-way, never during the
    writes but at the final flush to disk. A clear error, no crash, no partial file keeping the space."""
    import os

    import s3vae.data

    monkeypatch.setattr(s3vae.data, "WRITE_BLOCK", 1 << 14)
    written, real_write, real_fsync = [0], os.write, os.fsync

    def write(fd, data):
        if fill_at != "fsync" and written[0] + len(data) > fill_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    def fsync(fd):
        if fill_at == "fsync":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "train_0.h5"
    big = np.random.default_rng(0).integers(0, 255, (40, 4, 16, 16, 3), dtype=np.uint8)
    if fill_at == 10 ** 9:   # more than the shard: this one fits
        with atomic_h5(out) as f:
            create_frames(f, big)
        assert list(tmp_path.iterdir()) == [out]
        return
    with pytest.raises(ShardError, match=rf"{out}: no space left on device .*the partial file was removed"):
        with atomic_h5(out) as f:
            create_frames(f, big)
    assert list(tmp_path.iterdir()) == []


def test_a_stale_partial_file_of_a_killed_run_is_removed_by_the_next(tmp_path):
    out = tmp_path / "train_0.h5"
    (tmp_path / "train_0.h5.partial").write_bytes(b"\0" * 100_000)     # a run killed mid-write
    with pytest.raises(ValueError, match="frames must be"):                # the next run fails too
        with atomic_h5(out) as f:
            create_frames(f, np.zeros((2, 3), np.int64))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "train_0.h5.partial").write_bytes(b"\0" * 100_000)
    with atomic_h5(out) as f:                                          # or succeeds
        create_frames(f, frames())
    assert list(tmp_path.iterdir()) == [out]


def test_the_free_space_check_is_sized_to_the_compressed_shard(tmp_path, monkeypatch):
    """Frames that compress well need far less than their raw size: a disk with room for the file
    accepts it (the check used to compare against the uncompressed size)."""
    import shutil

    flat = np.zeros((64, 8, 32, 32, 3), np.uint8)          # 1.5 MiB raw, a few KiB with lzf
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=flat.nbytes // 4))
    out = tmp_path / "train_0.h5"
    with atomic_h5(out) as f:
        create_frames(f, flat)
    assert out.stat().st_size < flat.nbytes // 4


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(OSError, match="permission") as e:
        with atomic_h5(tmp_path / "a.h5") as f:
            create_frames(f, frames())
            raise OSError(errno.EACCES, "permission denied")
    assert not isinstance(e.value, ShardError)
    assert list(tmp_path.iterdir()) == []


# 5. Frames that are non-finite or of the wrong type are caught when a shard is opened.

def raw_shard(path, data):
    with h5py.File(path, "w") as f:  # as a foreign or damaged writer would, past create_frames' checks
        f.create_dataset("frames", data=data)
    return path


@pytest.mark.parametrize("data,message", [
    (np.zeros((4, 3, 8, 8, 3), np.float32), "holds float32, but video frames .* must be uint8"),
    (np.zeros((4, 3, 10), np.float64), "holds float64, but audio features .* must be float32"),
    (np.zeros((4, 3, 10), np.uint8), "holds uint8, but audio features .* must be float32"),
    (np.zeros((4, 8, 8, 3), np.uint8), r"has shape \(4, 8, 8, 3\) \(rank 4\); expected rank 5"),
])
def test_frames_of_the_wrong_type_or_rank_are_refused_at_open(tmp_path, data, message):
    path = raw_shard(tmp_path / "train_0.h5", data)
    with pytest.raises(ShardError, match=rf"{path}: dataset 'frames' {message}.*snakemake --forcerun"):
        open_shard(path, ["frames"])


@pytest.mark.parametrize("clip,value", [(0, np.nan), (2, np.inf), (5, -np.inf)])
def test_non_finite_audio_frames_name_the_clip(tmp_path, clip, value):
    data = np.zeros((6, 5, 10), np.float32)
    data[clip, 3, 7] = value
    path = raw_shard(tmp_path / "train_1.h5", data)
    with pytest.raises(ShardError, match=rf"{path}: dataset 'frames', clip {clip} holds non-finite values"):
        open_shard(path, ["frames"])


def test_training_data_goes_through_the_check(tmp_path):
    from s3vae.data import ClipDataset

    data = np.zeros((6, 5, 10), np.float32)
    data[4, 0, 0] = np.nan
    path = raw_shard(tmp_path / "train_0.h5", data)
    with pytest.raises(ShardError, match="clip 4 holds non-finite"):
        ClipDataset([str(path)], preload=True)


# Checkpoints: a pickle payload is refused, naming the file and why, and never suggests turning it off.

class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize("obj", [Payload(), {"model": {}, "config": Payload()}, {"opt": np.float64(1.0)}])
def test_a_checkpoint_with_python_objects_is_refused(tmp_path, obj):
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as e:
        load_weights_only(path)
    text = str(e.value)
    assert text.startswith(f"{path}: refused for safety") and "weights_only" not in text


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", pickle.dumps({"a": 1})[:5]])
def test_a_damaged_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{path}: .*(damaged|truncated|not a PyTorch)"):
        load_weights_only(path)


def test_evaluation_refuses_a_pickled_model(tmp_path):
    from s3vae.train import load_model

    path = tmp_path / "model.pt"
    torch.save({"model": {}, "model_config": Payload()}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: refused for safety"):
        load_model(path)


# 6. A shard that does not fit the model is refused when opened, naming the file and both shapes.

def _clips(path, shape, dtype=np.uint8):
    with atomic_h5(path) as f:
        create_frames(f, np.zeros(shape, dtype))
    return str(path)


@pytest.mark.parametrize("shape,model,found", [
    ((8, 5, 8, 8, 3), dict(image_size=16, channels=3), r"\(8, 8, 3\), but the model reads \(16, 16, 3\)"),
    ((8, 5, 16, 16, 1), dict(image_size=16, channels=3), r"\(16, 16, 1\), but the model reads \(16, 16, 3\)"),
    ((8, 5, 40), dict(modality="audio", audio_features=80), r"\(40,\), but the model reads \(80,\)"),     # mel bins
])
def test_training_refuses_a_shard_of_another_shape_at_open(tmp_path, shape, model, found):
    from s3vae.model import S3VAEConfig
    from s3vae.train import TrainConfig, train

    dtype = np.float32 if len(shape) == 3 else np.uint8
    clips = _clips(tmp_path / "train_0.h5", shape, dtype)
    mcfg = S3VAEConfig(**{"enc_widths": [8, 8], "dec_widths": [16, 8, 8], "feat_dim": 8, "hidden": 8, "z_f": 4,
                          "z_t": 4, "dfp_out": 1, "dfp_hidden": 8, **model})
    with pytest.raises(ShardError, match=rf"{clips}: dataset 'frames' holds frames of shape {found} \(model "
                                         r".*rebuild it"):
        train([clips], {}, tmp_path / "m.pt", tmp_path / "ck", mcfg, TrainConfig(epochs=1, batch_size=2,
              lambda_scc=0, lambda_dfp=0, lambda_mi=0), log=lambda *_: None)
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "ck/last.pt").exists()


@pytest.mark.parametrize("second", [(8, 6, 16, 16, 3), (8, 5, 8, 8, 3), (8, 6, 40)])
def test_shards_of_one_split_with_different_clip_shapes_are_refused(tmp_path, second):
    from s3vae.data import ClipDataset

    first = (8, 5, 40) if len(second) == 3 else (8, 5, 16, 16, 3)
    dtype = np.float32 if len(second) == 3 else np.uint8
    a, b = _clips(tmp_path / "train_0.h5", first, dtype), _clips(tmp_path / "train_1.h5", second, dtype)
    with pytest.raises(ShardError, match=rf"{b}: dataset 'frames' holds clips of shape .* but {a} holds"):
        ClipDataset([a, b], preload=True)


# 7. Non-finite values in a shard too large to check whole at open are found where it is read (preload),
#    and a non-finite loss names the shards and clips of its batch.

@pytest.mark.parametrize("clip", [1, 5, 10])
def test_a_nan_in_an_unsampled_clip_of_a_large_shard_is_found_at_preload(tmp_path, monkeypatch, clip):
    import s3vae.data
    from s3vae.data import ClipDataset

    monkeypatch.setattr(s3vae.data, "FINITE_CHECK_BYTES", 1)   # "large": open_shard checks clips 0 and 11 only
    data = np.zeros((12, 5, 10), np.float32)
    data[clip, 2, 3] = np.nan
    path = raw_shard(tmp_path / "train_0.h5", data)
    with open_shard(path, ["frames"]):
        pass                                                  # the sample misses it
    with pytest.raises(ShardError, match=rf"{path}: dataset 'frames', clip {clip} holds non-finite"):
        ClipDataset([str(path)], preload=True)


@pytest.mark.parametrize("value", [1e30, -3e38])
def test_a_non_finite_loss_names_the_shards_and_clips_of_its_batch(tmp_path, value):
    from s3vae.model import S3VAEConfig
    from s3vae.train import TrainConfig, train

    data = np.zeros((8, 5, 10), np.float32)
    data[:, :, 0] = value                                     # finite, but its squared error overflows
    path = raw_shard(tmp_path / "train_0.h5", data)
    mcfg = S3VAEConfig(modality="audio", audio_features=10, audio_width=8, feat_dim=8, hidden=8, z_f=4, z_t=4,
                       dfp_out=1)
    with pytest.raises(FloatingPointError, match=rf"non-finite .* at epoch 1, step 1 \(its batch: {path} clips \["):
        train([str(path)], {}, tmp_path / "m.pt", tmp_path / "ck", mcfg,
              TrainConfig(epochs=1, batch_size=4, lambda_scc=0, lambda_dfp=0, lambda_mi=0), log=lambda *_: None)
    assert not (tmp_path / "m.pt").exists()


# 8. Out of memory is said as such, with the job, the limit in force and what to change, wherever the
#    allocation fails: mapping torch's library, importing it, or a tensor in a step.

JOB = "train_model (dataset=sprites, variant=full, seed=1)"
OOM_CHILD = f"""
from s3vae.memory import name_out_of_memory
name_out_of_memory({JOB!r})
import torch
x = torch.nn.Conv2d(3, 16, 3)(torch.zeros(16, 3, 32, 32))
torch.empty(8_000_000_000, dtype=torch.uint8).fill_(1)
"""


@pytest.mark.parametrize("limit_mib", [200, 600, 2000])
def test_out_of_memory_names_the_job_the_limit_and_what_to_change(limit_mib):
    import resource
    import subprocess
    import sys

    limit = limit_mib << 20
    proc = subprocess.run([sys.executable, "-c", OOM_CHILD], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and last.startswith(f"out of memory in {JOB} ("), proc.stderr[-2000:]
    assert f"limit in force: {limit_mib} MiB of address space" in last and "mem_mb" in last and "batch_size" in last


def test_other_errors_are_not_called_out_of_memory():
    from s3vae.memory import is_out_of_memory

    assert not is_out_of_memory(RuntimeError("input.size(-1) must be equal to input_size"))
    assert not is_out_of_memory(ImportError("No module named 'h5py'"))
    assert is_out_of_memory(RuntimeError("could not create a primitive"))
    try:
        try:
            raise MemoryError
        except MemoryError as e:
            raise ValueError("while reading the shard") from e
    except ValueError as e:
        assert is_out_of_memory(e)


# 9. A second writer: a shard another process holds open for writing is refused; a shard rewritten during
#    training never yields a model.

def test_a_shard_held_open_for_writing_by_another_process_is_refused(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "train_0.h5"
    with atomic_h5(path) as f:
        create_frames(f, frames())
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(path)!r}, 'a'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ShardError, match=rf"{path}: another process holds it open for writing"):
            open_shard(path, ["frames"])
    finally:
        holder.kill()
        holder.wait()
    with open_shard(path, ["frames"]) as f:                  # once it is gone, the shard opens
        assert f["frames"].shape[0] == 6


@pytest.mark.parametrize("rewrite", ["replace", "touch"])
def test_a_shard_rewritten_during_training_yields_no_model(tmp_path, rewrite):
    import os

    from s3vae.model import S3VAEConfig
    from s3vae.train import TrainConfig, train

    path = tmp_path / "train_0.h5"
    with atomic_h5(path) as f:
        create_frames(f, np.zeros((8, 5, 10), np.float32))

    def rewriter(epoch, step, model, parts):
        if step == 0:
            if rewrite == "replace":                        # another build_*_shards run renames its shard in
                with atomic_h5(path) as f:
                    create_frames(f, np.ones((8, 5, 10), np.float32))
            else:
                os.utime(path, ns=(1, 1))

    mcfg = S3VAEConfig(modality="audio", audio_features=10, audio_width=8, feat_dim=8, hidden=8, z_f=4, z_t=4,
                       dfp_out=1)
    with pytest.raises(ShardError, match=rf"{path}: changed while training .* was not written"):
        train([str(path)], {}, tmp_path / "m.pt", tmp_path / "ck", mcfg,
              TrainConfig(epochs=1, batch_size=4, lambda_scc=0, lambda_dfp=0, lambda_mi=0), log=lambda *_: None,
              on_step=rewriter)
    assert not (tmp_path / "m.pt").exists()
