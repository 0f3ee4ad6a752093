"""Helpers shared by the in-VM test suites (tests/vm) and the fuzzer.

- wire: the DM_SWITCH ABI (numbers, layout, packing), defined once;
- nl: an independent DM_SWITCH netlink client written from the header;
- model: a reference model of a device's page table and the kernel's answers;
- nlfuzz: the netlink fuzzer (run as `python3 -m dmtest.nlfuzz CONFIG`);
- dmioctl: device-mapper ioctls without libdevmapper;
- faults: fault-injection attributes; klog: kernel-log scanning;
- placement: reading and writing markers to check where data lands.

Imported as a package: tests/pytest.ini puts tests/ on the import path.
"""
