"""One launch, many workers: `harness run --workers N` (the CPU stand-in for `--gpus`), the storage each
launch gets, faults (SIGINT, a killed worker), migration between storages, compact labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.grid import storage as st
from harness.grid.gpus import parse_apps, parse_gpus, plan_slots, select
from harness.labels import compact, labeller, varying_keys
from tests.support.cli_runner import harness
from tests.support.studies import tiny_spec


def test_labels_show_only_what_varies_one_short_line_per_point():
    points = [{"lora.r": r, "lora.alpha": 16, "model.load_in_4bit": q, "train.learning_rate": 1e-3, "train.seed": s}
              for r in (8, 16) for q in (True, False) for s in (0, 1)]
    assert varying_keys(points) == ["lora.r", "model.load_in_4bit", "train.seed"]
    label = labeller(points)
    assert label(points[0]) == "r=8 4bit seed=0"
    assert label(points[-1]) == "r=16 no-4bit seed=1"
    assert compact({"train.learning_rate": 0.0001}) == "lr=0.0001"
    assert compact({"a.r": 1, "b.r": 2}) == "a.r=1 b.r=2"  # the same last name twice keeps its section
    assert len(label(points[0], 6)) == 6 and label(points[0], 6).endswith("…")
    assert labeller([{"x": 1}])({"x": 1}) == "–"  # a single point: nothing varies


def test_cpu_slots_hide_every_gpu_and_are_numbered():
    slots = plan_slots(None, 1, 3)
    assert [s.index for s in slots] == [0, 1, 2]
    assert slots[1].env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HARNESS_SLOT": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert plan_slots(None, 1, None) == plan_slots(None, 1, 1)


@pytest.mark.parametrize("gpus, per_gpu, workers, message", [
    (None, 0, None, "--per-gpu 0"), (None, 1, 0, "--workers 0"), ("0", 1, 2, "exclude each other")])
def test_bad_slot_options_are_refused(gpus, per_gpu, workers, message):
    with pytest.raises(HarnessError, match=message):
        plan_slots(gpus, per_gpu, workers)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has NVIDIA GPUs")
def test_gpus_without_cuda_is_a_clear_error_before_any_trial(tmp_path):
    proc = harness("run", str(tiny_spec(tmp_path)), "--gpus", "all", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "--gpus needs CUDA GPUs" in proc.stdout + proc.stderr and "--workers N" in proc.stdout + proc.stderr
    assert not (tmp_path / "r" / "tiny").exists() or not list((tmp_path / "r" / "tiny").glob("trial-*"))


SMI_GPUS = "0, GPU-aaa, NVIDIA H100 80GB HBM3, 1, 81559\n1, GPU-bbb, NVIDIA H100 80GB HBM3, 40000, 81559\n"


SMI_APPS = "GPU-bbb, 4242, /usr/bin/python3, 39990\n"


def test_nvidia_smi_rows_are_read_as_gpus_and_their_processes():
    gpus = parse_gpus(SMI_GPUS)
    assert [(g.index, g.uuid, g.memory_used_mib) for g in gpus] == [(0, "GPU-aaa", 1), (1, "GPU-bbb", 40000)]
    assert parse_apps(SMI_APPS) == {"GPU-bbb": [(4242, "/usr/bin/python3", 39990)]}
    assert parse_gpus("0, GPU-c, NVIDIA GB10, [N/A], [N/A]")[0].memory_total_mib == 0  # unified memory


def test_gpus_names_only_gpus_the_node_has():
    node = parse_gpus("".join(f"{i}, GPU-{i}, NVIDIA H100, 0, 81559\n" for i in range(8)))
    assert [g.index for g in select("all", node)] == list(range(8))
    assert [g.index for g in select("0,1,3", node)] == [0, 1, 3]
    with pytest.raises(HarnessError, match="no GPU 9 on this node; it has 8 \\(0, 1, 2, 3, 4, 5, 6, 7\\)"):
        select("9", node)
    with pytest.raises(HarnessError, match="expected all or GPU indices"):
        select("two", node)


def test_local_storage_is_sqlite_for_one_worker_and_a_journal_for_several(tmp_path):
    assert st.local_storage(tmp_path / "a", 1).startswith("sqlite:///")
    assert st.local_storage(tmp_path / "b", 4) == st.journal_url(tmp_path / "b")
    (tmp_path / "b" / "study.journal").touch()
    assert st.local_storage(tmp_path / "b", 1) == st.journal_url(tmp_path / "b")  # the study lives there


def test_sqlite_with_several_workers_and_a_journal_across_nodes_are_refused(tmp_path):
    with pytest.raises(HarnessError, match="database is locked.*journal file.*PostgreSQL"):
        st.check_storage(st.sqlite_url(tmp_path), 2)
    with pytest.raises(HarnessError, match="PostgreSQL"):
        st.check_storage(st.journal_url(tmp_path), 8, hosts=2)
    st.check_storage(st.sqlite_url(tmp_path), 1)
    st.check_storage(st.journal_url(tmp_path), 8)


def test_a_journal_on_a_network_filesystem_is_refused(tmp_path):
    mounts = f"rootfs / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw,relatime 0 0\n"
    assert st.filesystem_type(tmp_path / "study", mounts) == "nfs4"
    assert st.filesystem_type(Path("/"), mounts) == "ext4"
    with pytest.raises(HarnessError, match="network filesystem \\(nfs4\\).*local disk.*PostgreSQL"):
        st.check_storage(st.journal_url(tmp_path / "study"), 2, mounts=mounts)
    assert st.filesystem_type(Path("/proc/self")) == "proc"  # the real /proc/mounts is read


def test_several_workers_on_a_study_that_lives_in_sqlite_say_how_to_move_it(tmp_path):
    spec_path = tiny_spec(tmp_path)
    (tmp_path / "r" / "tiny").mkdir(parents=True)
    (tmp_path / "r" / "tiny" / "study.db").touch()
    proc = harness("run", str(spec_path), "--workers", "2", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "harness study migrate tiny --to journal" in " ".join((proc.stdout + proc.stderr).split())


def test_an_unreachable_postgresql_is_an_error_before_any_worker_starts(tmp_path):
    proc = harness("run", str(tiny_spec(tmp_path)), "--workers", "2", "--results", str(tmp_path / "r"),
                   "--storage", "postgresql+psycopg2://nobody@127.0.0.1:9/none")
    assert proc.returncode == 2 and "cannot open the study storage" in proc.stdout + proc.stderr
    assert not (tmp_path / "r" / "tiny" / "logs").exists()
