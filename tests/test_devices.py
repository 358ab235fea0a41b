"""Device choice: auto on this machine, explicit CPU, and devices this build lacks."""

from __future__ import annotations

import pytest

from pcai_inference import BackendType, DeviceError, build_info


def test_auto_picks_cpu_on_a_cpu_build() -> None:
    info = build_info()
    if "cuda" in info["features"] or "metal" in info["features"]:
        pytest.skip("GPU build: auto depends on the hardware")
    assert BackendType.MISTRALRS.create(device="auto").device == "cpu"


def test_explicit_cpu() -> None:
    assert BackendType.MISTRALRS.create(device="cpu").device == "cpu"


def test_cuda_on_a_cpu_build_names_the_feature() -> None:
    if "cuda" in build_info()["features"]:
        pytest.skip("this build has CUDA")
    with pytest.raises(DeviceError) as e:
        BackendType.MISTRALRS.create(device="cuda")
    assert "`cuda` feature" in str(e.value) and "wheel" in str(e.value)
    with pytest.raises(DeviceError):
        BackendType.MISTRALRS.create(device="cuda:1")


def test_metal_on_a_build_without_it() -> None:
    if "metal" in build_info()["features"]:
        pytest.skip("this build has Metal")
    with pytest.raises(DeviceError, match="`metal` feature"):
        BackendType.MISTRALRS.create(device="metal")


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "", "gpu"])
def test_unknown_device(spec: str) -> None:
    with pytest.raises(DeviceError):
        BackendType.MISTRALRS.create(device=spec)


def test_build_info_reports_versions_and_kernels() -> None:
    info = build_info()
    assert info["mistralrs"] == "0.8.1"
    assert info["auto_device"] in ("cpu", "cuda:0", "metal:0")
    assert isinstance(info["cpu_kernels"], dict)
