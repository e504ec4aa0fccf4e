"""pytest over the open VixDiskLib through the Python package.

Run by the Swift test suite (Tests/VixDiskLibTests/PythonTests.swift), which sets
VIXDISKLIB to the built library, VMDK_INSPECT to the built vmdk-inspect and
VMDK_TEST_IMAGES to TestImages/. Every answer is compared with vmdk-inspect's.
"""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import vmdk

IMAGES = os.environ.get("VMDK_TEST_IMAGES", os.path.join(os.path.dirname(__file__), "..", "..", "TestImages"))
INSPECT = os.environ.get("VMDK_INSPECT", "vmdk-inspect")

CASES = [
    "vdiskmanager/monolithicSparse.vmdk",
    "stream/ovftool-export-1MiB.vmdk",
    "stream/open-vmdk-64KiB.vmdk",
    "esxi/vmfs_thick.vmdk",
    "cowd/ext2.vmdk",
]


def inspect(*args):
    out = subprocess.run([INSPECT, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def image(name):
    path = os.path.join(IMAGES, name)
    assert os.path.exists(path), path
    return path


@pytest.mark.parametrize("name", CASES)
def test_digest_matches_vmdk_inspect(name):
    path = image(name)
    expected = inspect("digest", "--json", path)
    h = hashlib.sha256()
    with vmdk.open(path) as disk:
        size = disk.info.capacity
        buf = bytearray(1 << 20)
        offset = 0
        while offset < size:
            n = min(len(buf), size - offset)
            view = memoryview(buf)[:n]
            disk.readinto(offset, view)
            h.update(view)
            offset += n
    digest = expected["sha256"] if "sha256" in expected else expected["digest"]
    assert h.hexdigest() == digest


@pytest.mark.parametrize("name", CASES)
def test_info_matches_vmdk_inspect(name):
    path = image(name)
    expected = inspect("info", "--json", path)
    with vmdk.open(path) as disk:
        info = disk.info
    assert info.capacity_sectors == expected["capacitySectors"]
    assert info.capacity == expected["virtualSize"]
    assert info.uuid == expected["uuid"]
    assert info.parent_file_name_hint == expected["parentFileNameHint"]
    if expected["adapterType"] in ("ide", "buslogic", "lsilogic"):
        assert info.adapter_type == expected["adapterType"]
    geo = expected.get("geometry")
    if geo:
        assert (info.bios_geometry.cylinders, info.bios_geometry.heads, info.bios_geometry.sectors) == (
            geo["cylinders"], geo["heads"], geo["sectors"])


@pytest.mark.parametrize("name", CASES)
def test_allocated_blocks_match_vmdk_inspect(name):
    path = image(name)
    expected = inspect("allocated", "--json", path)
    with vmdk.open(path) as disk:
        got = disk.allocated_blocks(chunk_size=expected["chunkSectors"])
    assert got == [(r["start"], r["length"]) for r in expected["ranges"]]


def test_missing_file_raises_code_4(tmp_path):
    with pytest.raises(vmdk.VixError) as e:
        vmdk.open(str(tmp_path / "missing.vmdk"))
    assert e.value.code == 4
    assert "missing.vmdk" in str(e.value)


def test_missing_extent_names_the_file():
    with pytest.raises(vmdk.VixError) as e:
        vmdk.open(image("esxi/vmfs_thick-000001.vmdk"))
    assert e.value.code == 4
    assert "vmfs_thick-000001-delta.vmdk" in str(e.value)


def qemu_tool(name):
    tool = shutil.which(name)
    if tool is None and os.environ.get("CI") != "true":
        pytest.skip(f"{name} is not installed")
    assert tool, f"{name} is needed when CI=true"
    return tool


def test_chain_made_by_qemu(tmp_path):
    qemu_img, qemu_io = qemu_tool("qemu-img"), qemu_tool("qemu-io")
    base, child = str(tmp_path / "base.vmdk"), str(tmp_path / "child.vmdk")
    subprocess.run([qemu_img, "create", "-q", "-f", "vmdk", base, "8M"], check=True)
    subprocess.run([qemu_io, "-f", "vmdk", "-c", "write -P 0x11 0 1M", base], check=True, capture_output=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child], check=True)
    subprocess.run([qemu_io, "-f", "vmdk", "-c", "write -P 0x22 512k 64k", child], check=True, capture_output=True)
    with vmdk.open(child) as disk:
        assert disk.info.num_links == 2
        assert disk.info.parent_file_name_hint.endswith("base.vmdk")
        data = disk.read(0, 1 << 20)
    assert data[: 512 << 10] == b"\x11" * (512 << 10)
    assert data[512 << 10 : 576 << 10] == b"\x22" * (64 << 10)
    assert data[576 << 10 :] == b"\x11" * ((1 << 20) - (576 << 10))
    with vmdk.open(child, single_link=True) as top:
        assert top.info.num_links == 1
        assert top.allocated_blocks() == [(512 << 10, 64 << 10)]
    # A missing parent is a partial chain.
    os.rename(base, base + ".gone")
    with pytest.raises(vmdk.VixError) as e:
        vmdk.open(child)
    assert e.value.code in (4, 16003)


def test_unaligned_read_is_refused():
    with vmdk.open(image(CASES[0])) as disk:
        with pytest.raises(ValueError):
            disk.read(1, 512)


def test_create_write_read_back(tmp_path):
    path = str(tmp_path / "new.vmdk")
    vmdk.create(path, 64 << 20, adapter_type="buslogic")
    pattern = bytes(range(256)) * 256  # 64 KiB
    with vmdk.open(path, read_only=False) as disk:
        assert disk.info.adapter_type == "buslogic"
        disk.write(1 << 20, pattern)
        disk.flush()
        assert disk.read(1 << 20, len(pattern)) == pattern
    with vmdk.open(path) as disk:
        assert disk.read(1 << 20, len(pattern)) == pattern
        assert disk.read(0, 4096) == bytes(4096)
        assert disk.allocated_blocks() == [(1 << 20, 64 << 10)]
    raw = str(tmp_path / "new.raw")
    subprocess.run([qemu_tool("qemu-img"), "convert", "-O", "raw", path, raw], check=True)
    with open(raw, "rb") as f:
        f.seek(1 << 20)
        assert f.read(len(pattern)) == pattern


def test_second_writer_gets_code_15(tmp_path):
    path = str(tmp_path / "locked.vmdk")
    vmdk.create(path, 1 << 20)
    with vmdk.open(path, read_only=False):
        with pytest.raises(vmdk.VixError) as e:
            vmdk.open(path, read_only=False)
        assert e.value.code == 15


def test_metadata_holds_the_disk_database():
    with vmdk.open(image(CASES[0])) as disk:
        meta = disk.metadata()
    assert meta.get("adapterType") == "buslogic"
    assert meta.get("virtualHWVersion") == "7"


def test_closed_disk_refuses_reads():
    disk = vmdk.open(image(CASES[0]))
    disk.close()
    disk.close()
    with pytest.raises(ValueError):
        disk.read(0, 512)
