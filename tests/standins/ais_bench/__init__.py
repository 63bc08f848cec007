"""TEST DOUBLE of Huawei's ``ais_bench`` inference tool (``python3 -m ais_bench``), following docs
docs/reference/ascend-interfaces.md. It lives under tests/ and is never shipped: put tests/standins on PYTHONPATH.

It reads the stand-in om (see ../standin_om.py) and computes real outputs with ONNX Runtime on the CPU.
The stand-in device is configured by environment variables:
- STANDIN_NPU_CHIP (default Ascend310P3; comma-separated: the chip of each device, see
  ../standin_device.py): an om built for another soc_version than the --device's chip fails to load;
  each run holds the device (a second process on it at the same time is recorded as shared);
- STANDIN_NPU_OOM_BATCH (default 64): the batch from which an Ascend310 om cannot get device memory;
- STANDIN_NPU_DEVICES (default: as many as npu-smi lists): device ids from 0 to this minus 1 open, others fail;
- STANDIN_AIS_BENCH_ERA (default 2023): 2022 writes the old layout (OUTPUT/<ts>/sumary.json, no
  ``count``) and prints the old throughput line.
Like the guide's Ascend310 at batch 64, an Ascend310 om with batch >= 64 cannot get device memory.
"""
